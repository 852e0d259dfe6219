package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Line is the line of the YAML file the problem is on; 0 when unknown
	// (a default or environment value, or a Config built in Go).
	Line int
	// Path is the field path, e.g. "kafka.brokers[1]"; empty for problems
	// with the document as a whole.
	Path string
	// Source names the environment variable the value came from, if any.
	Source string
	// Msg says what is wrong and what is allowed.
	Msg string
}

func (p *Problem) Error() string {
	var b strings.Builder
	if p.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		if p.Source != "" {
			b.WriteString(" (from ")
			b.WriteString(p.Source)
			b.WriteString(")")
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem found in one configuration. errors.As finds each
// *Problem through Unwrap.
type Error struct {
	// Source is the file name, or "" for a Config built in Go.
	Source   string
	Problems []*Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.Source != "" {
		b.WriteString(" ")
		b.WriteString(e.Source)
	}
	b.WriteString(": ")
	if len(e.Problems) == 1 {
		b.WriteString(e.Problems[0].Error())
		return b.String()
	}
	fmt.Fprintf(&b, "%d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// problems collects Problems.
type problems []*Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, &Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (ps *problems) addLine(line int, path, format string, args ...any) {
	*ps = append(*ps, &Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (ps problems) err(source string) error {
	if len(ps) == 0 {
		return nil
	}
	return &Error{Source: source, Problems: ps}
}
