#ifndef SWIFT_MTLS_CGNUTLS_SHIM_H
#define SWIFT_MTLS_CGNUTLS_SHIM_H

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <gnutls/pkcs12.h>
#include <gnutls/abstract.h>
#include <errno.h>

// `gnutls_free` is a global function pointer (plus a macro that assigns NULL to its argument);
// Swift 6 rejects reading the mutable global, so callers free through this wrapper.
static inline void mtls_gnutls_free(void *pointer) {
    gnutls_free(pointer);
}

// Swift cannot see errno's macro values as the plain ints that gnutls_transport_set_errno wants.
static inline int mtls_eagain(void) { return EAGAIN; }

#endif
