//! Pricing an order: pure functions, so every rule is unit-tested.

use crate::catalog::Product;
use crate::money::Points;

use super::models::{OrderLine, OrderRequest, PlaceOrderError};

/// Prices each requested line at the product's current price.
///
/// # Errors
/// [`PlaceOrderError::ProductNotFound`] for the first requested product that
/// is not in `products`; [`PlaceOrderError::TotalTooLarge`] on overflow.
pub fn price_lines(
    request: &OrderRequest,
    products: &[Product],
) -> Result<Vec<OrderLine>, PlaceOrderError> {
    request
        .lines()
        .iter()
        .map(|(id, quantity)| {
            let product = products
                .iter()
                .find(|p| p.id == *id)
                .ok_or(PlaceOrderError::ProductNotFound { product_id: *id })?;
            let line_total = product
                .price
                .checked_mul(quantity.get())
                .ok_or(PlaceOrderError::TotalTooLarge)?;
            Ok(OrderLine {
                product_id: *id,
                name: product.name.clone(),
                quantity: *quantity,
                unit_price: product.price,
                line_total,
            })
        })
        .collect()
}

/// The sum of the line totals.
///
/// # Errors
/// [`PlaceOrderError::TotalTooLarge`] on overflow.
pub fn total_of(lines: &[OrderLine]) -> Result<Points, PlaceOrderError> {
    lines
        .iter()
        .try_fold(Points::ZERO, |sum, line| sum.checked_add(line.line_total))
        .ok_or(PlaceOrderError::TotalTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ProductId, ProductName, Stock};
    use crate::ordering::Quantity;

    fn product(id: i64, price: i64) -> Product {
        Product {
            id: ProductId::new(id),
            name: ProductName::parse(&format!("p{id}")).expect("valid"),
            price: Points::new(price).expect("valid"),
            stock: Stock::new(10).expect("valid"),
            version: Default::default(),
        }
    }

    fn request(lines: &[(i64, i64)]) -> OrderRequest {
        OrderRequest::new(
            lines
                .iter()
                .map(|(id, q)| (ProductId::new(*id), Quantity::new(*q).expect("valid")))
                .collect(),
        )
        .expect("valid")
    }

    #[test]
    fn lines_are_priced_at_the_current_price_and_summed() {
        let lines = price_lines(
            &request(&[(2, 3), (1, 1)]),
            &[product(1, 1_500), product(2, 700)],
        )
        .expect("priced");
        assert_eq!(lines[0].line_total.get(), 1_500);
        assert_eq!(lines[1].line_total.get(), 2_100);
        assert_eq!(total_of(&lines).map(Points::get), Ok(3_600));
    }

    #[test]
    fn an_unknown_product_is_named() {
        let result = price_lines(&request(&[(1, 1), (7, 1)]), &[product(1, 100)]);
        assert_eq!(
            result,
            Err(PlaceOrderError::ProductNotFound {
                product_id: ProductId::new(7)
            })
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let result = price_lines(&request(&[(1, 1_000)]), &[product(1, i64::MAX / 2)]);
        assert_eq!(result, Err(PlaceOrderError::TotalTooLarge));
    }
}
