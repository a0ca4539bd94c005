package main

import (
	"errors"
	"io"
)

func statusCmd(args []string, stdout, stderr io.Writer) error {
	return errors.New("status: not built yet")
}
