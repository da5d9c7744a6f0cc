#define _GNU_SOURCE
#include <sched.h>
#include "cnetns.h"

int fathom_enter_netns(int fd) { return setns(fd, CLONE_NEWNET); }
