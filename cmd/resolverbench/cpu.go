package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is the machine's and this process's CPU time at one instant.
type cpuSample struct {
	at         time.Time
	busy, idle time.Duration // whole machine, from /proc/stat
	self       time.Duration // this process (user + system)
	ok         bool
}

// cpuShare is how many cores, on average, each party used during a run.
type cpuShare struct {
	self, loadgen, other, idle float64
}

// clockTick is USER_HZ, the unit of /proc/stat; 100 on Linux.
const clockTick = 100

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return s
	}
	var total, idle int64
	for i, f := range fields[1:] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return s
		}
		if i >= 8 { // guest and guest_nice are already counted in user and nice
			break
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	tick := time.Second / clockTick
	s.busy, s.idle = time.Duration(total-idle)*tick, time.Duration(idle)*tick
	s.ok = true
	return s
}

// share returns the cores used between s and end by this process, by the
// child that has exited (nil if unknown), and by everything else.
func (s cpuSample) share(end cpuSample, child interface {
	UserTime() time.Duration
	SystemTime() time.Duration
}) cpuShare {
	wall := end.at.Sub(s.at).Seconds()
	if wall <= 0 {
		return cpuShare{}
	}
	var c cpuShare
	c.self = (end.self - s.self).Seconds() / wall
	if child != nil {
		c.loadgen = (child.UserTime() + child.SystemTime()).Seconds() / wall
	}
	if s.ok && end.ok {
		busy := (end.busy - s.busy).Seconds() / wall
		c.other = max(busy-c.self-c.loadgen, 0)
		c.idle = (end.idle - s.idle).Seconds() / wall
	}
	return c
}
