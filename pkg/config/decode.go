package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// decoder maps a YAML node tree onto a Config, field by field, instead of
// yaml.v3's Decode: that way every problem names the field path and line,
// all problems are collected rather than the first, duplicate keys and
// unknown fields are errors, a key with an empty value keeps its default,
// and no scalar is silently converted (1.5 into an int, "yes" into a bool).
type decoder struct {
	ps problems
	// lines maps a field path to the line of its value, so that
	// validation problems can point into the file too.
	lines map[string]int
	// failed holds the paths whose value was refused; validation problems
	// about them (or below them) would only repeat the complaint.
	failed map[string]bool
}

func newDecoder() *decoder {
	return &decoder{lines: map[string]int{}, failed: map[string]bool{}}
}

// maxAliasChain bounds alias-to-alias resolution.
const maxAliasChain = 32

// document decodes data, a single YAML document holding a mapping, into v.
// It reports false when the document as a whole is unusable.
func (d *decoder) document(data []byte, v reflect.Value) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return true // an empty file: every field keeps its default
		}
		d.ps.add("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			d.ps.add("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		} else {
			d.ps.addLine(extra.Line, "", "the file holds more than one YAML document (---); allowed: exactly one")
		}
		return false
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return true
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return true
	}
	if root.Kind != yaml.MappingNode {
		d.ps.addLine(root.Line, "", "want a mapping of sections (site:, database:, kafka:, ...), got %s", describeNode(root, false))
		return false
	}
	d.value(root, v, "")
	return true
}

var (
	secretType   = reflect.TypeFor[Secret]()
	unmarshalerT = reflect.TypeFor[yaml.Unmarshaler]()
)

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.failed[path] = true
	d.ps.addLine(n.Line, path, format, args...)
}

// value decodes n into v (addressable) at the field path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	for i := 0; n.Kind == yaml.AliasNode; i++ {
		if n.Alias == nil || i == maxAliasChain {
			d.fail(n, path, "alias *%s does not resolve to a value", n.Value)
			return
		}
		n = n.Alias
	}
	if path != "" {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // "key:" with no value keeps the default
	}
	t := v.Type()
	if reflect.PointerTo(t).Implements(unmarshalerT) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		d.structFields(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want %s, got %s", want(t), describeNode(n, false))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.value(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		d.mapEntries(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

// fieldNames lists a struct's YAML keys in declaration order.
func fieldNames(t reflect.Type) ([]string, map[string]int) {
	names := make([]string, 0, t.NumField())
	index := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		index[name] = i
	}
	return names, index
}

func (d *decoder) structFields(n *yaml.Node, v reflect.Value, path string) {
	names, index := fieldNames(v.Type())
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping with the fields %s, got %s", strings.Join(names, ", "), describeNode(n, false))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name, ok := d.key(k, path, seen)
		if !ok {
			continue
		}
		fi, ok := index[name]
		if !ok {
			msg := "unknown field; allowed: " + strings.Join(names, ", ")
			if s := closest(name, names); s != "" {
				msg = fmt.Sprintf("unknown field (did you mean %s?); allowed: %s", s, strings.Join(names, ", "))
			}
			d.fail(k, joinPath(path, name), "%s", msg)
			continue
		}
		d.value(val, v.Field(fi), joinPath(path, name))
	}
}

func (d *decoder) mapEntries(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want %s, got %s", want(t), describeNode(n, false))
		return
	}
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, ok := d.key(n.Content[i], path, seen)
		if !ok {
			continue
		}
		e := reflect.New(t.Elem()).Elem()
		d.value(n.Content[i+1], e, joinPath(path, name))
		m.SetMapIndex(reflect.ValueOf(name).Convert(t.Key()), e)
	}
	v.Set(m)
}

// key checks a mapping key: a plain scalar, no merge key, not seen before.
func (d *decoder) key(k *yaml.Node, path string, seen map[string]int) (string, bool) {
	if k.Kind != yaml.ScalarNode {
		d.fail(k, path, "keys must be plain names, got %s", describeNode(k, false))
		return "", false
	}
	if k.ShortTag() == "!!merge" {
		d.fail(k, path, "merge keys (<<) are not supported; write the fields out")
		return "", false
	}
	name := k.Value
	if first, dup := seen[name]; dup {
		d.fail(k, joinPath(path, name), "set twice (first on line %d); allowed: once", first)
		return "", false
	}
	seen[name] = k.Line
	return name, true
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	hide := t == secretType
	bad := func() { d.fail(n, path, "want %s, got %s", want(t), describeNode(n, hide)) }
	if n.Kind != yaml.ScalarNode {
		bad()
		return
	}
	switch t.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.ShortTag() != "!!bool" || err != nil {
			bad()
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			bad()
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if n.ShortTag() != "!!int" || n.Decode(&u) != nil || v.OverflowUint(u) {
			bad()
			return
		}
		v.SetUint(u)
	default:
		// Only reachable if a field of an unsupported type is added.
		d.fail(n, path, "field of Go type %s cannot be set from YAML", t)
	}
}

// want describes what a field of type t accepts.
func want(t reflect.Type) string {
	switch t {
	case secretType:
		return "a string"
	case reflect.TypeFor[Duration]():
		return durationAllowed
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Int8, reflect.Int16, reflect.Int32:
		max := int64(1)<<(t.Bits()-1) - 1
		return fmt.Sprintf("an integer %d..%d", -max-1, max)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("an integer 0..%d", uint64(math.MaxUint64)>>(64-t.Bits()))
	case reflect.Slice:
		return "a list of " + plural(t.Elem())
	case reflect.Map:
		return "a mapping of names to " + plural(t.Elem())
	case reflect.Struct:
		names, _ := fieldNames(t)
		return "a mapping with the fields " + strings.Join(names, ", ")
	}
	return t.String()
}

func plural(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "strings"
	case reflect.Struct:
		return "mappings"
	}
	return want(t) + " values"
}

// describeNode says what a node holds without printing more than a short
// scalar (and not even that when hide is set: a secret must not be
// echoed).
func describeNode(n *yaml.Node, hide bool) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	if hide {
		return "a value of type " + n.ShortTag()
	}
	s := n.Value
	if utf8.RuneCountInString(s) > 64 {
		s = string([]rune(s)[:64]) + "..."
	}
	return strconv.Quote(s)
}

// closest returns the name in names nearest to s if it is a plausible
// typo (edit distance at most 2), else "".
func closest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, capped work for short names.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
