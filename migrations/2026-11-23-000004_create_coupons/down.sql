DROP TABLE coupons; DROP TABLE coupon_campaigns;
