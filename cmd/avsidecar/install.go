package main

import (
	"errors"
	"io"
)

func installCmd(args []string, stdout, stderr io.Writer) error {
	return errors.New("install: not built yet")
}
