//! The model side: the [`LlmClient`] trait and its OpenAI-compatible implementation
//! (`POST {base_url}/chat/completions` with `tools`, as served by OpenAI, vLLM, llama.cpp's
//! server, Ollama and others).
//!
//! Only the fields babysitter uses are modelled; unknown response fields are ignored, so a
//! server that adds its own still works.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One message of a conversation, in the chat-completions wire form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text; `null` on an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<String>,
    /// The calls an assistant message makes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn system(text: impl Into<String>) -> Message {
        Message::text("system", text)
    }
    pub fn user(text: impl Into<String>) -> Message {
        Message::text("user", text)
    }
    pub fn tool(call_id: &str, content: impl Into<String>) -> Message {
        Message {
            role: "tool".into(),
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.to_string()),
        }
    }
    fn text(role: &str, text: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: Some(text.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A call the model asks for. `arguments` is a JSON *string*, as the API sends it: the model
/// may write invalid JSON there, which babysitter must catch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Some servers omit it; the investigator then numbers the call itself.
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON string per the API; a server that sends a JSON object instead is accepted (the
    /// object is kept in its string form).
    #[serde(default, deserialize_with = "string_or_json")]
    pub arguments: String,
}

fn string_or_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// A tool offered to the model: `{"type": "function", "function": {name, description,
/// parameters}}` where `parameters` is a JSON schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// The request body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// `auto` while tools are offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    pub temperature: f64,
}

/// Token counts of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Choice {
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("model endpoint unreachable: {0}")]
    Transport(String),
    #[error("model call timed out after {0:?}")]
    Timeout(Duration),
    #[error("model endpoint answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("model response is not a chat completion: {0}")]
    BadResponse(String),
}

/// Talks to a model. The engine never sees more than this: one call in, one message out.
#[async_trait]
pub trait LlmClient: Send + Sync {
    /// The model name (recorded with every investigation).
    fn model(&self) -> &str;
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
}

/// An OpenAI-compatible chat-completions endpoint.
pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    model: String,
    key: Option<String>,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiClient {
    /// `base_url` up to the version (`http://localhost:11434/v1`); `timeout` bounds each call.
    /// The investigator enforces its own per-call limit; this one (a second longer) is the
    /// backstop for callers that use the client alone.
    pub fn new(
        base_url: &str,
        model: &str,
        key: Option<String>,
        timeout: Duration,
    ) -> Result<OpenAiClient, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(timeout + Duration::from_secs(1))
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        Ok(OpenAiClient {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            key,
        })
    }

    /// The client the `[agent]` section describes (reads the key from file or env).
    pub fn from_config(cfg: &super::AgentConfig) -> Result<OpenAiClient, super::AgentSetupError> {
        let key = cfg.api_key()?;
        OpenAiClient::new(&cfg.base_url, &cfg.model, key, cfg.request_timeout)
            .map_err(super::AgentSetupError::Client)
    }
}

#[async_trait]
impl LlmClient for OpenAiClient {
    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut req = self.http.post(&self.url).json(request);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Transport(format!("timed out: {e}"))
            } else {
                LlmError::Transport(e.to_string())
            }
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        if !status.is_success() {
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            });
        }
        serde_json::from_str(&body).map_err(|e| {
            LlmError::BadResponse(format!(
                "{e}; body starts: {}",
                body.chars().take(200).collect::<String>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_matches_the_api() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![
                Message::system("s"),
                Message {
                    role: "assistant".into(),
                    content: None,
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: "list_runbooks".into(),
                            arguments: "{}".into(),
                        },
                    }],
                    tool_call_id: None,
                },
                Message::tool("call_1", "[]"),
            ],
            tools: vec![],
            tool_choice: None,
            temperature: 0.0,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["messages"][1]["content"], serde_json::Value::Null);
        assert_eq!(v["messages"][1]["tool_calls"][0]["type"], "function");
        assert_eq!(v["messages"][2]["tool_call_id"], "call_1");
        assert!(v.get("tools").is_none());
        assert!(v["messages"][0].get("tool_calls").is_none());
    }

    #[test]
    fn response_with_extra_fields_parses() {
        let r: ChatResponse = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
        )
        .unwrap();
        assert_eq!(
            r.choices[0].message.tool_calls[0].function.arguments,
            "{\"a\":1}"
        );
        assert_eq!(r.usage.unwrap().total_tokens, 15);
    }

    #[test]
    fn object_arguments_and_missing_ids_are_accepted() {
        let r: ChatResponse = serde_json::from_str(
            r#"{"choices":[{"message":{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]}}]}"#,
        )
        .unwrap();
        let c = &r.choices[0].message.tool_calls[0];
        assert_eq!(c.function.arguments, r#"{"a":1}"#);
        assert_eq!(c.id, "");
        assert!(r.usage.is_none());
    }
}
