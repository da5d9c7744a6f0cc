#ifndef FATHOM_CMEMORY_H
#define FATHOM_CMEMORY_H

/// Serves allocations of at least `bytes` from mmap, so freeing one returns it to the system;
/// glibc's own threshold climbs to 32 MiB and keeps such blocks in its heap. No-op elsewhere.
void fathom_allocate_large_from_mmap(int bytes);

#endif
