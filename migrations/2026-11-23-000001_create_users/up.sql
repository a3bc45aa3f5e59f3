-- Accounts. Passwords are argon2id PHC strings; users provisioned by a trusted
-- gateway have no password and can only come in through the gateway.
CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login_id      VARCHAR(64)  NOT NULL,
    name          VARCHAR(100) NOT NULL,
    password_hash TEXT,
    role          VARCHAR(16)  NOT NULL DEFAULT 'USER',
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT users_login_id_key UNIQUE (login_id),
    CONSTRAINT users_role_check CHECK (role IN ('USER', 'ADMIN'))
);
