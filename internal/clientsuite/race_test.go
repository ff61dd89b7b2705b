//go:build race

package clientsuite

func init() { raceEnabled = true }
