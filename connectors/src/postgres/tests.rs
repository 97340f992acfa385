use super::*;
use crate::ConnectorError;

fn options(pairs: &[(&str, &str)]) -> Options {
    Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn a_libpq_or_jdbc_url_names_the_server_and_username_and_password_override_it() {
    let c = client_config(&options(&[(
        URL,
        "postgres://ann:secret@db.local:6543/shop",
    )]))
    .unwrap();
    assert_eq!(c.get_user(), Some("ann"));
    assert_eq!(c.get_password(), Some(&b"secret"[..]));
    assert_eq!(c.get_dbname(), Some("shop"));
    assert_eq!(c.get_ports(), [6543]);
    let c = client_config(&options(&[
        (URL, "jdbc:postgresql://localhost:5432/shop?user=bob"),
        (PASSWORD, "pw"),
    ]))
    .unwrap();
    assert_eq!(c.get_user(), Some("bob"));
    assert_eq!(c.get_password(), Some(&b"pw"[..]));
    let c = client_config(&options(&[
        (URL, "postgresql://localhost/shop"),
        (USERNAME, "carl"),
    ]))
    .unwrap();
    assert_eq!(c.get_user(), Some("carl"));
}

#[test]
fn a_url_of_another_database_or_without_a_user_is_an_error_at_the_url() {
    for (url, words) in [
        ("jdbc:mysql://localhost/shop", "speaks PostgreSQL only"),
        ("mysql://localhost/shop", "is not a PostgreSQL URL"),
        ("postgres://localhost/shop", "name the user"),
    ] {
        match client_config(&options(&[(URL, url)])) {
            Err(ConnectorError::Option { option, message }) => {
                assert_eq!(option, URL);
                assert!(message.contains(words), "{url}: {message}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
