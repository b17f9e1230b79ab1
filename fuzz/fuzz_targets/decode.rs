//! Any bytes as an image file: decoding must fail cleanly or give an image
//! that encodes, decodes back to itself, and prints as crit's JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use revenant_images::{Image, Reader};

fuzz_target!(|data: &[u8]| {
    // Entry framing alone.
    if let Ok(mut r) = Reader::new(data) {
        while let Ok(Some(_)) = r.next_raw() {}
    }
    let Ok(image) = Image::decode(data) else { return };
    let bytes = image.encode();
    let again = Image::decode(&bytes).expect("an encoded image decodes");
    assert_eq!(again, image, "decode(encode(image)) differs");
    assert_eq!(again.encode(), bytes, "encoding is not stable");
    let _ = image.to_json().pretty();
});
