"""The Shopify Admin API client (the publish side); intake reads webhooks and needs no client."""
