DROP INDEX invest_products_open_idx;
