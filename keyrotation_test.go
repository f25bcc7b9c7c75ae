package rotatord

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestValidateWaves(t *testing.T) {
	for _, c := range []struct {
		waves []int
		ok    bool
	}{
		{[]int{100}, true},
		{[]int{1, 10, 100}, true},
		{[]int{10, 100}, true},
		{nil, false},
		{[]int{}, false},
		{[]int{1, 10}, false},       // not every agent
		{[]int{10, 10, 100}, false}, // not increasing
		{[]int{50, 10, 100}, false},
		{[]int{0, 100}, false},
		{[]int{-5, 100}, false},
		{[]int{1, 101}, false},
		{make([]int, MaxWaves+1), false},
	} {
		err := ValidateWaves(c.waves)
		if (err == nil) != c.ok {
			t.Errorf("ValidateWaves(%v) = %v, want ok %v", c.waves, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateWaves(%v) = %v, want an EINVALID error", c.waves, err)
		}
	}
}

func TestValidateHaltRate(t *testing.T) {
	for _, c := range []struct {
		rate float64
		ok   bool
	}{{0, true}, {0.05, true}, {1, true}, {-0.01, false}, {1.01, false}, {math.NaN(), false}, {math.Inf(1), false}} {
		if err := ValidateHaltRate(c.rate); (err == nil) != c.ok {
			t.Errorf("ValidateHaltRate(%v) = %v, want ok %v", c.rate, err, c.ok)
		}
	}
}

func TestWaveEnds(t *testing.T) {
	for _, c := range []struct {
		n     int
		waves []int
		want  []int
	}{
		// Cumulative percents, rounded up: the canary of 50 agents at 1% is 1.
		{50, []int{1, 10, 100}, []int{1, 5, 50}},
		{50, []int{10, 100}, []int{5, 50}},
		{3, []int{1, 10, 100}, []int{1, 1, 3}}, // the second wave is empty
		{10000, []int{1, 10, 100}, []int{100, 1000, 10000}},
		{101, []int{1, 10, 100}, []int{2, 11, 101}},
		{0, []int{1, 100}, []int{0, 0}},
		{7, []int{100}, []int{7}},
	} {
		if got := WaveEnds(c.n, c.waves); !slices.Equal(got, c.want) {
			t.Errorf("WaveEnds(%d, %v) = %v, want %v", c.n, c.waves, got, c.want)
		}
	}
}

func TestFleetWaveFailureRate(t *testing.T) {
	w := FleetWave{Agents: 5, Failed: 1}
	if got := w.FailureRate(); got != 0.2 {
		t.Fatalf("rate = %v, want 0.2", got)
	}
	w.AuthFailures = 1
	if got := w.FailureRate(); got != 0.4 {
		t.Fatalf("rate with an auth failure = %v, want 0.4", got)
	}
	if (FleetWave{}).FailureRate() != 0 || !(FleetWave{}).Ended() {
		t.Fatal("an empty wave fails nothing and has ended")
	}
	if (FleetWave{Agents: 2, Waiting: 1}).Ended() {
		t.Fatal("a wave with an agent waiting has not ended")
	}
}
