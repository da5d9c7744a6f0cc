#ifndef FATHOM_CMEMORY_H
#define FATHOM_CMEMORY_H

#include <stddef.h>

/// Serves allocations of at least `bytes` from mmap, so freeing one returns it to the system;
/// glibc's own threshold climbs to 32 MiB and keeps such blocks in its heap. No-op elsewhere.
void fathom_allocate_large_from_mmap(int bytes);

/// Memory for a large table touched at random (a flow table, its sessions): 2 MiB-aligned and
/// marked for transparent huge pages where the system leaves that to each process (`madvise`
/// mode), so a lookup costs fewer TLB misses and the table fewer page faults. Tables under
/// 2 MiB come from malloc. NULL when out of memory. Free with `fathom_free_table`.
void *fathom_allocate_table(size_t bytes);
void fathom_free_table(void *table);

#endif
