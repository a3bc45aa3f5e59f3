DROP TABLE investments; DROP TABLE invest_products;
