package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The command line is parsed with the standard library's flag package
// rather than a cli framework: the ones at hand render their help through
// text/template, whose reflective method calls keep every exported method
// of every type in the binary, about 2.4 MB of the daemon's mapped text
// and tables (most of which the kernel maps in at start and keeps as RSS).

// command is one command of the tree: a leaf runs action, a group passes
// the rest of the command line to one of subs.
type command struct {
	name    string
	usage   string
	args    string    // positional arguments in the usage line ("ID"); "" when it takes none
	options []*option // its own; the root and the leaves also take the global options
	action  func(context.Context, *invocation) error
	subs    []*command
}

// kind is the type of an option's value.
type kind int

const (
	kindString kind = iota
	kindInt
	kindUint
	kindFloat
	kindDuration
	kindSwitch // a bool set by its presence: --json
)

// option is one flag. One marked env is also read from PROVISIOND_<NAME>
// (upper case, "-" as "_") when the command line does not set it.
type option struct {
	name  string
	alias string // a one-letter alias (-v); "" for none
	kind  kind
	meta  string // the value's placeholder in the help ("FILE")
	usage string
	def   string // the default; "" for none
	shown string // the default as the help shows it, when derived rather than fixed
	env   bool
}

// envName is the environment variable of option name.
func envName(name string) string {
	return "PROVISIOND_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// check returns an error when v is not a valid value of o.
func (o *option) check(v string) error {
	var err error
	switch o.kind {
	case kindInt:
		_, err = strconv.Atoi(v)
	case kindUint:
		_, err = strconv.ParseUint(v, 10, 64)
	case kindFloat:
		_, err = strconv.ParseFloat(v, 64)
	case kindDuration:
		_, err = time.ParseDuration(v)
	case kindSwitch:
		_, err = strconv.ParseBool(v)
	}
	if ne := (*strconv.NumError)(nil); errors.As(err, &ne) {
		err = ne.Err
	}
	return err
}

// setter records an option given on the command line in set, the values
// of one invocation.
type setter struct {
	o   *option
	set map[string]string
}

func (s setter) String() string { return "" }

func (s setter) Set(v string) error {
	if err := s.o.check(v); err != nil {
		return err
	}
	s.set[s.o.name] = v
	return nil
}

func (s setter) IsBoolFlag() bool { return s.o.kind == kindSwitch }

// invocation is one parsed command line: the options it set and the
// positional arguments left after them. Its values were checked when it
// was parsed, so the accessors do not fail.
type invocation struct {
	stdout io.Writer
	args   []string
	set    map[string]string  // options the command line set; an inner command's win
	known  map[string]*option // every option the command takes
}

// value returns what option name resolved to: the command line, else the
// environment, else the default. An empty variable counts for a string
// option and is ignored for other kinds. It panics on an option the
// command does not take: a programmer error.
func (in *invocation) value(name string) string {
	o, ok := in.known[name]
	if !ok {
		panic("provisiond: no option --" + name + " on this command")
	}
	if v, ok := in.set[name]; ok {
		return v
	}
	if v, ok := o.fromEnv(); ok {
		return v
	}
	return o.def
}

// fromEnv returns the value of o's environment variable, if it counts.
func (o *option) fromEnv() (string, bool) {
	if !o.env {
		return "", false
	}
	v, ok := os.LookupEnv(envName(o.name))
	return v, ok && (v != "" || o.kind == kindString)
}

// checkEnv returns an error naming the first environment variable of an
// option in known that the command line does not override and that holds
// an invalid value.
func (in *invocation) checkEnv() error {
	names := make([]string, 0, len(in.known))
	for name := range in.known {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if _, set := in.set[name]; set {
			continue
		}
		o := in.known[name]
		if v, ok := o.fromEnv(); ok {
			if err := o.check(v); err != nil {
				return fmt.Errorf("%s=%q: %w", envName(name), v, err)
			}
		}
	}
	return nil
}

func (in *invocation) str(name string) string { return in.value(name) }

func (in *invocation) on(name string) bool {
	b, _ := strconv.ParseBool(in.value(name))
	return b
}

func (in *invocation) integer(name string) int {
	n, _ := strconv.Atoi(in.value(name))
	return n
}

func (in *invocation) unsigned(name string) uint64 {
	n, _ := strconv.ParseUint(in.value(name), 10, 64)
	return n
}

func (in *invocation) float(name string) float64 {
	f, _ := strconv.ParseFloat(in.value(name), 64)
	return f
}

func (in *invocation) duration(name string) time.Duration {
	d, _ := time.ParseDuration(in.value(name))
	return d
}

// app is provisiond's command line.
type app struct {
	root    *command
	global  []*option
	version string
	stdout  io.Writer
}

// run parses args (without the program name) and runs the command they
// name. Global options may stand before or after a command.
func (a *app) run(ctx context.Context, args []string) error {
	set := map[string]string{}
	known := map[string]*option{}
	path := []*command{a.root}
	for {
		cmd := path[len(path)-1]
		fs := flag.NewFlagSet(a.name(path), flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Usage = func() {}
		for _, o := range a.options(path) {
			known[o.name] = o
			fs.Var(setter{o, set}, o.name, o.usage)
			if o.alias != "" {
				fs.Var(setter{o, set}, o.alias, o.usage)
			}
		}
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return a.help(path)
		}
		if err != nil {
			return a.usageError(path, err.Error())
		}
		args = fs.Args()
		if on, _ := strconv.ParseBool(set["version"]); on && len(path) == 1 {
			_, err := fmt.Fprintf(a.stdout, "%s version %s\n", a.root.name, a.version)
			return err
		}
		if len(cmd.subs) == 0 {
			break
		}
		if len(args) == 0 {
			return a.help(path)
		}
		sub := cmd.sub(args[0])
		if sub == nil {
			return a.usageError(path, fmt.Sprintf("unknown command %q", args[0]))
		}
		path, args = append(path, sub), args[1:]
	}
	cmd := path[len(path)-1]
	if cmd.args == "" && len(args) > 0 {
		return a.usageError(path, fmt.Sprintf("unexpected argument %q", args[0]))
	}
	in := &invocation{stdout: a.stdout, args: args, set: set, known: known}
	if err := in.checkEnv(); err != nil {
		return a.usageError(path, err.Error())
	}
	return cmd.action(ctx, in)
}

// options are what the last command of path takes: the root and the
// leaves their own and the global options, a group none.
func (a *app) options(path []*command) []*option {
	cmd := path[len(path)-1]
	switch {
	case len(path) == 1:
		return append(append([]*option(nil), a.global...), cmd.options...)
	case len(cmd.subs) > 0:
		return nil
	}
	return append(append([]*option(nil), cmd.options...), a.global...)
}

func (c *command) sub(name string) *command {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// usageError is a command line error in the last command of path; it
// points at that command's help. main prints it after "provisiond: ".
func (a *app) usageError(path []*command, msg string) error {
	if len(path) > 1 {
		msg = a.name(path[1:]) + ": " + msg
	}
	return fmt.Errorf("%s (see %s --help)", msg, a.name(path))
}

// name is the command line that leads to the last command of path.
func (a *app) name(path []*command) string {
	names := make([]string, len(path))
	for i, c := range path {
		names[i] = c.name
	}
	return strings.Join(names, " ")
}

// help prints the help of the last command of path to stdout.
func (a *app) help(path []*command) error {
	cmd, name := path[len(path)-1], a.name(path)
	tw := tabwriter.NewWriter(a.stdout, 1, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME:\n   %s - %s\n\nUSAGE:\n", name, cmd.usage)
	switch {
	case len(path) == 1:
		fmt.Fprintf(tw, "   %s [global options] command [command options]\n\nVERSION:\n   %s\n", name, a.version)
	case len(cmd.subs) > 0:
		fmt.Fprintf(tw, "   %s command [command options]\n", name)
	case cmd.args != "":
		fmt.Fprintf(tw, "   %s [options] %s\n", name, cmd.args)
	default:
		fmt.Fprintf(tw, "   %s [options]\n", name)
	}
	if len(cmd.subs) > 0 {
		fmt.Fprintf(tw, "\nCOMMANDS:\n")
		for _, s := range cmd.subs {
			fmt.Fprintf(tw, "   %s\t%s\n", s.name, s.usage)
		}
	}
	title, opts := "OPTIONS", a.options(path)
	if len(path) == 1 {
		title = "GLOBAL OPTIONS"
	}
	fmt.Fprintf(tw, "\n%s:\n", title)
	for _, o := range opts {
		fmt.Fprintf(tw, "   %s\t%s\n", o.synopsis(), o.describe())
	}
	fmt.Fprintf(tw, "   --help, -h\tshow help\n")
	return tw.Flush()
}

// synopsis is the left column of o's help line: --name META, -a.
func (o *option) synopsis() string {
	s := "--" + o.name
	if o.kind != kindSwitch {
		s += " " + o.meta
	}
	if o.alias != "" {
		s += ", -" + o.alias
	}
	return s
}

// describe is the right column of o's help line: the usage, the default
// and the environment variable.
func (o *option) describe() string {
	s := o.usage
	switch {
	case o.shown != "":
		s += " (default: " + o.shown + ")"
	case o.def != "" && o.kind == kindString:
		s += " (default: " + strconv.Quote(o.def) + ")"
	case o.def != "" && o.kind != kindSwitch:
		s += " (default: " + o.def + ")"
	}
	if o.env {
		s += " [$" + envName(o.name) + "]"
	}
	return s
}
