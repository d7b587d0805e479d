fn main() {
    let _ = protoc_bin_vendored::protoc_bin_path();
}
