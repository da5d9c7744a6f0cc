#ifndef FATHOM_CCURL_H
#define FATHOM_CCURL_H

#include <curl/curl.h>

// libcurl is opened on first use (dlopen), not linked: linked, it and the ~40 libraries it
// needs (TLS, Kerberos, LDAP, ...) were loaded and relocated at every start of every command,
// a third of the start-up time of `fathom requests`, though only the API client and the
// ClickHouse store use it.
//
// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call: one typed
// wrapper per argument kind the clients use.

/// Opens libcurl and runs its global set-up, once (thread-safe). CURLE_OK when ready; else
/// CURLE_FAILED_INIT and `fathom_curl_load_error` says why.
CURLcode fathom_curl_load(void);
/// Why loading failed (dlerror's text), or an empty string.
const char *fathom_curl_load_error(void);

CURL *fathom_curl_easy_init(void);
void fathom_curl_easy_cleanup(CURL *handle);
CURLcode fathom_curl_easy_perform(CURL *handle);
const char *fathom_curl_easy_strerror(CURLcode code);
struct curl_slist *fathom_curl_slist_append(struct curl_slist *list, const char *text);
void fathom_curl_slist_free_all(struct curl_slist *list);

CURLcode fathom_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode fathom_curl_setopt_pointer(CURL *handle, CURLoption option, const void *value);
/// Memory given as a blob is copied by libcurl (CURL_BLOB_COPY), so the caller's bytes need not
/// outlive the call.
CURLcode fathom_curl_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length);

typedef size_t (*fathom_curl_write_callback)(char *data, size_t size, size_t count, void *context);
typedef int (*fathom_curl_progress_callback)(void *context, curl_off_t download_total, curl_off_t downloaded,
                                             curl_off_t upload_total, curl_off_t uploaded);

CURLcode fathom_curl_set_write(CURL *handle, fathom_curl_write_callback callback, void *context);
CURLcode fathom_curl_set_progress(CURL *handle, fathom_curl_progress_callback callback, void *context);
long fathom_curl_response_code(CURL *handle);

#endif
