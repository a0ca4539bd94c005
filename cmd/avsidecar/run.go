package main

import (
	"errors"
	"io"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	return errors.New("run: not built yet")
}
