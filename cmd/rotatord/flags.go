package main

import (
	"flag"
	"fmt"
	"io"
)

// newFlags returns the flag set of a command. A bad flag comes back from
// Parse as an error that main prints once, without the list of flags; -h
// prints the list to stderr and returns flag.ErrHelp, which exits 0.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rotatord "+name, flag.ContinueOnError)
	fs.SetOutput(&flagOutput{w: stderr})
	setUsage(fs, func() {
		fmt.Fprintf(stderr, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
	})
	return fs
}

// setUsage makes print the help of fs, shown for -h only.
func setUsage(fs *flag.FlagSet, print func()) {
	o, ok := fs.Output().(*flagOutput)
	if !ok {
		fs.Usage = print
		return
	}
	fs.Usage = func() {
		if o.failed {
			// Package flag reports a bad flag, then calls Usage: the
			// error alone is enough.
			o.failed = false
			return
		}
		o.helping = true
		defer func() { o.helping = false }()
		print()
	}
}

// flagOutput is a flag set's output. Outside Usage, package flag writes
// only to report a bad flag; that message is dropped, as Parse returns the
// same error for main to print.
type flagOutput struct {
	w       io.Writer
	helping bool // Usage is printing the help
	failed  bool // package flag just reported a bad flag
}

func (o *flagOutput) Write(p []byte) (int, error) {
	if o.helping {
		return o.w.Write(p)
	}
	o.failed = true
	return len(p), nil
}
