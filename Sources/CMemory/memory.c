#include "cmemory.h"

#include <stdlib.h>  // defines __GLIBC__ on glibc systems
#include <sys/mman.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void fathom_allocate_large_from_mmap(int bytes) {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, bytes);
#else
  (void)bytes;
#endif
}

enum { huge_page_bytes = 2 << 20 };

void *fathom_allocate_table(size_t bytes) {
  if (bytes < huge_page_bytes) return malloc(bytes > 0 ? bytes : 1);
  void *table = NULL;
  if (posix_memalign(&table, huge_page_bytes, bytes) != 0) return NULL;
#if defined(MADV_HUGEPAGE)
  // Advice only: a kernel without THP, or with it off, keeps small pages.
  (void)madvise(table, bytes, MADV_HUGEPAGE);
#endif
  return table;
}

void fathom_free_table(void *table) { free(table); }
