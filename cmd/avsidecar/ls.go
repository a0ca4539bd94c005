package main

import (
	"errors"
	"io"
)

func lsCmd(args []string, stdout, stderr io.Writer) error {
	return errors.New("ls: not built yet")
}
