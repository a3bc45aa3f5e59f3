//! Coupon codes: 16 characters of Crockford base32 (no I, L, O, U), drawn
//! from the thread's CSPRNG (ChaCha, seeded from the OS). 80 bits each, so
//! codes cannot be guessed and practically never collide.

use domain::coupon::CodeGenerator;
use domain::ordering::CouponCode;
use rand::RngExt as _;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LENGTH: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
pub struct RandomCodes;

impl CodeGenerator for RandomCodes {
    fn generate(&self, count: usize) -> Vec<CouponCode> {
        let mut rng = rand::rng();
        (0..count)
            .filter_map(|_| {
                let code: String = (0..LENGTH)
                    .map(|_| char::from(CROCKFORD[rng.random_range(0..CROCKFORD.len())]))
                    .collect();
                CouponCode::parse(&code).ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_sixteen_crockford_characters_and_distinct() {
        let codes = RandomCodes.generate(10_000);
        assert_eq!(codes.len(), 10_000);
        assert!(
            codes
                .iter()
                .all(|c| c.as_str().len() == 16
                    && c.as_str().bytes().all(|b| CROCKFORD.contains(&b)))
        );
        let distinct: HashSet<&str> = codes.iter().map(CouponCode::as_str).collect();
        assert_eq!(distinct.len(), 10_000);
    }
}
