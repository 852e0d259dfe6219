//go:build !race

package testenv

// raceEnabled reports whether the test binary was built with -race, so the
// binaries it builds are too.
const raceEnabled = false
