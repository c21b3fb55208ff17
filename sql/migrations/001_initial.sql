-- Surge schema v1. Applied by `surge migrate` in one transaction under an advisory lock.

-- API clients: only a SHA-256 hash of each key is stored.
CREATE TABLE api_clients (
  id          text PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  key_hash    bytea NOT NULL UNIQUE,
  key_prefix  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  disabled_at timestamptz
);

-- One row per accepted order, applied or rejected. (client_id, idempotency_key) is the final
-- word on idempotency: a redelivered or replayed entry hits ON CONFLICT DO NOTHING.
CREATE TABLE orders (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  client_id       text NOT NULL,
  idempotency_key text NOT NULL,
  order_id        text,
  customer_id     text NOT NULL,
  currency        char(3) NOT NULL,
  total_cents     bigint NOT NULL CHECK (total_cents >= 0),
  status          text NOT NULL CHECK (status IN ('applied', 'rejected')),
  reason          text,
  placed_at       timestamptz,
  metadata        jsonb,
  received_at     timestamptz NOT NULL,
  applied_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  stream          text NOT NULL,
  entry_id        text NOT NULL,
  CONSTRAINT orders_client_key UNIQUE (client_id, idempotency_key),
  CONSTRAINT orders_reason_iff_rejected CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX orders_received_at ON orders (received_at);

CREATE TABLE order_items (
  order_pk         bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  line             smallint NOT NULL,
  sku              text NOT NULL,
  qty              integer NOT NULL CHECK (qty > 0),
  unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
  PRIMARY KEY (order_pk, line)
);
CREATE INDEX order_items_sku ON order_items (sku);

-- Stock. SKUs without a row are not stock-checked.
CREATE TABLE inventory (
  sku        text PRIMARY KEY,
  available  bigint NOT NULL CHECK (available >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Entries that could not be applied, with why. The DLQ stream carries the same entries.
CREATE TABLE dead_letters (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  client_id       text,
  idempotency_key text,
  stream          text NOT NULL,
  entry_id        text NOT NULL,
  reason          text NOT NULL,
  sqlstate        text,
  message         text,
  payload         text,
  deliveries      integer NOT NULL DEFAULT 1,
  first_seen_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at    timestamptz NOT NULL DEFAULT now(),
  replayed_at     timestamptz,
  CONSTRAINT dead_letters_entry UNIQUE (stream, entry_id)
);
CREATE INDEX dead_letters_client_key ON dead_letters (client_id, idempotency_key);
CREATE INDEX dead_letters_first_seen ON dead_letters (first_seen_at);
