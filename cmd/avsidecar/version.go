package main

import (
	"errors"
	"io"
)

func versionCmd(args []string, stdout, stderr io.Writer) error {
	return errors.New("version: not built yet")
}
