package pgstore

import "syscall"

// tcpUserTimeout is TCP_USER_TIMEOUT (linux/tcp.h), the same on every
// Linux architecture.
const tcpUserTimeout = 0x12

func setUserTimeout(fd uintptr, ms int) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, ms)
}
