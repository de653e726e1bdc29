//! The claims decoder and the renew request body: any bytes decode or are
//! refused, never a panic, and what decodes encodes back to the same claims.
#![no_main]

use charter_token::{Claims, RenewRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<Claims>(data) {
        let again = serde_json::to_vec(&c).expect("claims serialise");
        let back: Claims = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(back, c);
        let _ = charter_token::rules::renewal_due_at(&c);
    }
    let _ = serde_json::from_slice::<RenewRequest>(data);
});
