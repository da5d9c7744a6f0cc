#ifndef FATHOM_CNETNS_H
#define FATHOM_CNETNS_H

/// Moves the calling thread into the network namespace open at `fd` (setns with CLONE_NEWNET).
/// Returns 0 on success, -1 with errno set otherwise.
int fathom_enter_netns(int fd);

#endif
