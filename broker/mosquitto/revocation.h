/*
 * Revocations on $CONTROL/messenger/v1 (acl/revocation.py): a message from the service account
 * names one token (its jti) or a user's tokens issued before a moment. The covered clients are
 * kicked, with their Last Will, and the covered cached answers dropped, so that the reconnect
 * asks the gateway (which refuses revoked tokens).
 */
#ifndef MESSENGER_REVOCATION_H
#define MESSENGER_REVOCATION_H

#include <stddef.h>

#include "plugin.h"

/* Apply the control message `payload` that `sender` (the service's client id) published;
 * anything that is not a valid revocation is logged and ignored. */
void ma_revocation_apply(struct ma_plugin *pl, const char *sender, const void *payload, size_t len);

#endif /* MESSENGER_REVOCATION_H */
