"""How our own media is named on Shopify: `<handle>-<kind>-cip<16 hex of the approved image's SHA-256><ext>`.

Publishing names media this way (`shopify_publish.media_file_name`) and recognises it on a retry; intake and
`catalog shopify sync` must never take it back in as a product photo. Its own module, so that intake, which runs in
the light webhook and intake Lambdas, does not import the publishing stage for one pattern.
"""

import re

OUR_MEDIA_NAME = re.compile(r"-([a-z_]+)-cip([0-9a-f]{16})\.[a-z]+(?:\?|$)")  # groups: the kind, the hash token


def is_our_media_url(url: str) -> bool:
    """True for an image we published (our file name): intake must not take it in as a product photo again."""
    return OUR_MEDIA_NAME.search(url) is not None
