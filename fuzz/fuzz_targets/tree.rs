//! Tree blobs: any bytes either parse into a tree of safe, sorted names or are refused.
#![no_main]
use cairn_engine::Id;
use cairn_engine::format::tree::{Tree, is_safe_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(&Id::default(), data) {
        assert!(tree.nodes.iter().all(|n| is_safe_name(&n.name.0)));
        assert!(tree.nodes.windows(2).all(|w| w[0].name < w[1].name));
        let again =
            Tree::decode(&Id::default(), &tree.encode()).expect("a decoded tree re-encodes");
        assert_eq!(again, tree);
    }
});
