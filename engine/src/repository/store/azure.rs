//! Azure Blob Storage repositories: the client's settings from the standard Azure environment
//! (the variables `object_store` reads, the Azure CLI's names, and a connection string), and the
//! one request `object_store` does not make: creating a missing container at `init`.

use object_store::ClientOptions;
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};

use crate::error::{Error, Result};

/// The emulator's well-known account, when none is set.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// The settings of a connection string (`AZURE_STORAGE_CONNECTION_STRING`):
/// `AccountName`, `AccountKey`, `SharedAccessSignature`, `BlobEndpoint` (else one made of
/// `DefaultEndpointsProtocol`, the account and `EndpointSuffix` when those are given), and
/// `UseDevelopmentStorage=true` for the emulator.
fn connection_string(s: &str) -> Result<Vec<(AzureConfigKey, String)>> {
    let mut fields = std::collections::HashMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(Error::Invalid(format!(
                "AZURE_STORAGE_CONNECTION_STRING has a part without '=' ({part:?}): copy the whole connection string from the storage account's access keys"
            )));
        };
        fields.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let mut out = vec![];
    let get = |name: &str| fields.get(name).cloned();
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        out.push((AzureConfigKey::UseEmulator, "true".into()));
    }
    if let Some(account) = get("accountname") {
        out.push((AzureConfigKey::AccountName, account));
    }
    if let Some(key) = get("accountkey") {
        out.push((AzureConfigKey::AccessKey, key));
    }
    if let Some(sas) = get("sharedaccesssignature") {
        out.push((AzureConfigKey::SasKey, sas));
    }
    let endpoint = get("blobendpoint").or_else(|| {
        let suffix = get("endpointsuffix")?;
        let protocol = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
        Some(format!(
            "{protocol}://{}.blob.{suffix}",
            get("accountname")?
        ))
    });
    if let Some(endpoint) = endpoint {
        out.push((AzureConfigKey::Endpoint, endpoint));
    }
    Ok(out)
}

/// The client settings from the environment, later ones winning: the connection string, the
/// Azure CLI's `AZURE_STORAGE_ACCOUNT` and `AZURE_STORAGE_KEY`, then every variable
/// `object_store` knows (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
/// `AZURE_STORAGE_SAS_TOKEN`, `AZURE_STORAGE_ENDPOINT`, `AZURE_STORAGE_USE_EMULATOR`, the
/// client-secret, workload-identity and managed-identity ones…).
fn settings() -> Result<Vec<(AzureConfigKey, String)>> {
    let mut out = match std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
        Ok(s) => connection_string(&s)?,
        Err(_) => vec![],
    };
    for (alias, key) in [
        ("AZURE_STORAGE_ACCOUNT", AzureConfigKey::AccountName),
        ("AZURE_STORAGE_KEY", AzureConfigKey::AccessKey),
    ] {
        if let Ok(value) = std::env::var(alias) {
            out.push((key, value));
        }
    }
    for (name, value) in std::env::vars() {
        if name.starts_with("AZURE_")
            && let Ok(key) = name.to_ascii_lowercase().parse()
        {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// A client of `container` built from the environment (see [`settings`]), with the store's
/// client options and retries.
pub(crate) fn builder(
    container: &str,
    options: ClientOptions,
    retry: object_store::RetryConfig,
) -> Result<MicrosoftAzureBuilder> {
    let mut builder = MicrosoftAzureBuilder::new();
    for (key, value) in settings()? {
        builder = builder.with_config(key, value);
    }
    if let Ok(endpoint) = std::env::var("IDENTITY_ENDPOINT") {
        builder = builder.with_msi_endpoint(endpoint);
    }
    let http = container_url(&builder, "").starts_with("http://");
    Ok(builder
        .with_container_name(container)
        .with_client_options(options.with_allow_http(http))
        .with_retry(retry))
}

/// The URL of `container` as `object_store` addresses it: under `AZURITE_BLOB_STORAGE_URL`
/// (else `http://127.0.0.1:10000`) and the account for the emulator, else under the endpoint
/// (else `https://ACCOUNT.blob.core.windows.net`).
fn container_url(builder: &MicrosoftAzureBuilder, container: &str) -> String {
    let account = builder.get_config_value(&AzureConfigKey::AccountName);
    let emulator = builder
        .get_config_value(&AzureConfigKey::UseEmulator)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"));
    let service = if emulator {
        let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
        format!(
            "{}/{}",
            url.trim_end_matches('/'),
            account.as_deref().unwrap_or(EMULATOR_ACCOUNT)
        )
    } else {
        builder
            .get_config_value(&AzureConfigKey::Endpoint)
            .unwrap_or_else(|| {
                format!(
                    "https://{}.blob.core.windows.net",
                    account.as_deref().unwrap_or_default()
                )
            })
    };
    format!("{}/{container}", service.trim_end_matches('/'))
}

/// Creates the container the client of `builder` (built as `azure`) writes to, unless it
/// exists. Credentials limited to one container (a container SAS) may not create it: the
/// refusal is logged and `init` goes on, so that an existing container still works.
pub(crate) async fn create_container(
    builder: &MicrosoftAzureBuilder,
    azure: &MicrosoftAzure,
    options: &ClientOptions,
) -> Result<()> {
    let container = builder
        .get_config_value(&AzureConfigKey::ContainerName)
        .unwrap_or_default();
    let url = format!("{}?restype=container", container_url(builder, &container));
    let account = builder
        .get_config_value(&AzureConfigKey::AccountName)
        .unwrap_or_else(|| EMULATOR_ACCOUNT.into());
    let http: HttpClient = ReqwestConnector::default().connect(options)?;
    let credential = azure.credentials().get_credential().await?;
    let mut request = http::Request::put(&url)
        .header(http::header::CONTENT_LENGTH, "0")
        .body(Vec::new().into())
        .expect("valid request");
    AzureAuthorizer::new(&credential, &account).try_authorize(&mut request)?;
    let response = http.execute(request).await.map_err(|e| {
        Error::Invalid(format!(
            "creating the Azure container {container:?} failed: {e}; check the account and endpoint settings"
        ))
    })?;
    match response.status() {
        s if s.is_success() || s == http::StatusCode::CONFLICT => Ok(()),
        s => {
            tracing::warn!(
                %container,
                "could not create the container (HTTP {s}); using it as it is"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_give_account_key_and_endpoint() {
        let got = connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        let find = |k: AzureConfigKey| got.iter().find(|(g, _)| *g == k).map(|(_, v)| v.clone());
        assert_eq!(find(AzureConfigKey::AccountName).as_deref(), Some("acct"));
        assert_eq!(find(AzureConfigKey::AccessKey).as_deref(), Some("a2V5"));
        assert_eq!(
            find(AzureConfigKey::Endpoint).as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        let emulator = connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(emulator, vec![(AzureConfigKey::UseEmulator, "true".into())]);
        let sas = connection_string(
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=x%3D",
        )
        .unwrap();
        assert!(sas.contains(&(AzureConfigKey::SasKey, "sv=2022&sig=x%3D".into())));
        assert!(sas.contains(&(
            AzureConfigKey::Endpoint,
            "https://acct.blob.core.windows.net/".into()
        )));
        assert!(connection_string("AccountName").is_err());
    }
}
