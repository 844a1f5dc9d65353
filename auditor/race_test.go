//go:build race

package auditor_test

// raceEnabled is true when the race detector is on: it multiplies memory.
const raceEnabled = true
