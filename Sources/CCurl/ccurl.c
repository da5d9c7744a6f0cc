#include "ccurl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

// The libcurl functions Fathom calls, resolved by name from the opened library.
static struct {
  CURLcode (*global_init)(long flags);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *handle);
  CURLcode (*easy_perform)(CURL *handle);
  const char *(*easy_strerror)(CURLcode code);
  CURLcode (*easy_setopt)(CURL *handle, CURLoption option, ...);
  CURLcode (*easy_getinfo)(CURL *handle, CURLINFO info, ...);
  struct curl_slist *(*slist_append)(struct curl_slist *list, const char *text);
  void (*slist_free_all)(struct curl_slist *list);
} curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CURLcode load_result = CURLE_FAILED_INIT;
static char load_error[512];

static void *symbol(void *library, const char *name) {
  void *address = dlsym(library, name);
  if (address == NULL && load_error[0] == 0) snprintf(load_error, sizeof load_error, "libcurl has no %s", name);
  return address;
}

static void load(void) {
  // The soname of libcurl 7.16 and later (Debian's libcurl4 packages).
  void *library = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    const char *reason = dlerror();
    snprintf(load_error, sizeof load_error, "cannot load libcurl (install libcurl4): %s", reason ? reason : "");
    return;
  }
  curl.global_init = symbol(library, "curl_global_init");
  curl.easy_init = symbol(library, "curl_easy_init");
  curl.easy_cleanup = symbol(library, "curl_easy_cleanup");
  curl.easy_perform = symbol(library, "curl_easy_perform");
  curl.easy_strerror = symbol(library, "curl_easy_strerror");
  curl.easy_setopt = symbol(library, "curl_easy_setopt");
  curl.easy_getinfo = symbol(library, "curl_easy_getinfo");
  curl.slist_append = symbol(library, "curl_slist_append");
  curl.slist_free_all = symbol(library, "curl_slist_free_all");
  if (load_error[0] != 0) return;
  load_result = curl.global_init(CURL_GLOBAL_ALL);
  if (load_result != CURLE_OK) snprintf(load_error, sizeof load_error, "curl_global_init failed (%d)", (int)load_result);
}

CURLcode fathom_curl_load(void) {
  pthread_once(&load_once, load);
  return load_result;
}

const char *fathom_curl_load_error(void) { return load_error; }

// The functions below are called only after fathom_curl_load returned CURLE_OK.

CURL *fathom_curl_easy_init(void) { return curl.easy_init(); }
void fathom_curl_easy_cleanup(CURL *handle) { curl.easy_cleanup(handle); }
CURLcode fathom_curl_easy_perform(CURL *handle) { return curl.easy_perform(handle); }

const char *fathom_curl_easy_strerror(CURLcode code) {
  return curl.easy_strerror != NULL ? curl.easy_strerror(code) : "libcurl not loaded";
}

struct curl_slist *fathom_curl_slist_append(struct curl_slist *list, const char *text) {
  return curl.slist_append(list, text);
}

void fathom_curl_slist_free_all(struct curl_slist *list) {
  if (curl.slist_free_all != NULL) curl.slist_free_all(list);
}

CURLcode fathom_curl_setopt_long(CURL *handle, CURLoption option, long value) {
  return curl.easy_setopt(handle, option, value);
}

CURLcode fathom_curl_setopt_pointer(CURL *handle, CURLoption option, const void *value) {
  return curl.easy_setopt(handle, option, value);
}

CURLcode fathom_curl_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length) {
  struct curl_blob blob = {(void *)data, length, CURL_BLOB_COPY};
  return curl.easy_setopt(handle, option, &blob);
}

CURLcode fathom_curl_set_write(CURL *handle, fathom_curl_write_callback callback, void *context) {
  CURLcode code = curl.easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
  return code != CURLE_OK ? code : curl.easy_setopt(handle, CURLOPT_WRITEDATA, context);
}

CURLcode fathom_curl_set_progress(CURL *handle, fathom_curl_progress_callback callback, void *context) {
  CURLcode code = curl.easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, callback);
  if (code == CURLE_OK) code = curl.easy_setopt(handle, CURLOPT_XFERINFODATA, context);
  return code != CURLE_OK ? code : curl.easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
}

long fathom_curl_response_code(CURL *handle) {
  long code = 0;
  curl.easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &code);
  return code;
}
