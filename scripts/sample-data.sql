-- Synthetic sample data for the lab: obviously fake residents, never real personal information.
-- About one record per resident (psql variable :population), a few KB per resident across systems is the
-- sizing assumption used elsewhere; this sample keeps only a small resident table and a tax table.
\set ON_ERROR_STOP on
CREATE SCHEMA IF NOT EXISTS juki;
CREATE TABLE IF NOT EXISTS juki.residents (
    resident_no  bigint PRIMARY KEY,
    name         text NOT NULL,
    kana         text NOT NULL,
    birth_date   date NOT NULL,
    address      text NOT NULL,
    registered   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS juki.tax_assessments (
    resident_no  bigint REFERENCES juki.residents,
    fiscal_year  int NOT NULL,
    amount_yen   bigint NOT NULL,
    PRIMARY KEY (resident_no, fiscal_year)
);
INSERT INTO juki.residents (resident_no, name, kana, birth_date, address)
SELECT n,
       '試験 太郎' || n,
       'シケン タロウ' || n,
       date '1940-01-01' + (n * 7919 % 30000),
       '架空県サンプル町' || (n % 50 + 1) || '丁目' || (n % 30 + 1) || '番'
FROM generate_series(1, :population) AS n
ON CONFLICT (resident_no) DO NOTHING;
INSERT INTO juki.tax_assessments (resident_no, fiscal_year, amount_yen)
SELECT resident_no, 2026, 30000 + resident_no * 37 % 400000 FROM juki.residents
ON CONFLICT DO NOTHING;
SELECT count(*) AS residents FROM juki.residents;
