package main

import (
	"math/bits"
	"time"
)

// histogram counts durations in log-linear buckets, HDR style: 128 buckets
// per power of two, so a reported quantile is at most 1/128 (< 0.8%) above
// the true value, in bounded memory whatever the request count. Not safe for
// concurrent use: each worker has its own and they are merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	sum    time.Duration
	max    time.Duration
}

const (
	subBits = 7
	subSize = 1 << subBits // buckets per power of two
	// maxTracked is the largest duration with its own bucket; longer ones
	// are counted in the last bucket (max is still exact). Requests cannot
	// last that long: -timeout is at most maxTimeout.
	maxTracked  = time.Duration(1)<<36 - 1 // about 68.7 s
	histBuckets = (36-subBits)*subSize + subSize
)

// bucket returns the bucket index of d (nanoseconds).
func bucket(d time.Duration) int {
	if d < 0 {
		d = 0
	}
	if d > maxTracked {
		d = maxTracked
	}
	v := uint64(d)
	if v < 2*subSize {
		return int(v)
	}
	e := bits.Len64(v) - (subBits + 1) // >= 1
	return (e+1)*subSize + int(v>>e) - subSize
}

// bucketHigh returns the largest duration counted in bucket i.
func bucketHigh(i int) time.Duration {
	if i < 2*subSize {
		return time.Duration(i)
	}
	e := i/subSize - 1
	m := uint64(i%subSize + subSize)
	return time.Duration((m+1)<<e - 1)
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucket(d)]++
	h.total++
	h.sum += d
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q <= 1), rounded up to its bucket's
// upper bound and capped at the maximum seen. Zero when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q * float64(h.total))
	if float64(rank) < q*float64(h.total) {
		rank++
	}
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketHigh(i), h.max)
		}
	}
	return h.max
}

func (h *histogram) mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return h.sum / time.Duration(h.total)
}
