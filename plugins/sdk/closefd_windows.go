package sdk

import "syscall"

// closeFD closes a descriptor received from the host.
func closeFD(fd int) { syscall.Close(syscall.Handle(fd)) }
