use super::*;

fn options(pairs: &[(&str, &str)]) -> Options {
    Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn a_url_must_be_a_redis_url() {
    assert!(client(&options(&[(URL, "redis://127.0.0.1:6379/2")])).is_ok());
    match client(&options(&[(URL, "http://127.0.0.1:6379")])) {
        Err(ConnectorError::Option { option, message }) => {
            assert_eq!(option, URL);
            assert!(message.contains("is not a Redis URL"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
