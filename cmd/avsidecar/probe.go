package main

import (
	"errors"
	"io"
)

func probeCmd(args []string, stdout, stderr io.Writer) error {
	return errors.New("probe: not built yet")
}
