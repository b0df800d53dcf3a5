package io.otbridge.flink;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;

/**
 * A Confluent-compatible schema registry (Apicurio's ccompat API locally), read by schema id: the
 * writer schema of a record in the Confluent wire format. Not serializable: a function creates
 * it in {@code open()} from the URL and user info it was given.
 */
public final class Registry {
  private final String url;
  private final String authorization;
  private final HttpClient http;
  private final ObjectMapper json = new ObjectMapper();

  /**
   * @param url Confluent-compatible API base, e.g. http://127.0.0.1:8080/apis/ccompat/v7
   * @param userInfo "user:password" for basic auth, or null
   */
  public Registry(String url, String userInfo) {
    this.url = url.replaceAll("/+$", "");
    this.authorization =
        userInfo == null || userInfo.isEmpty()
            ? null
            : "Basic "
                + Base64.getEncoder().encodeToString(userInfo.getBytes(StandardCharsets.UTF_8));
    this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
  }

  /** The schema text for an id, or null when the registry does not know it (404). */
  public String schemaText(int schemaId) throws IOException, InterruptedException {
    HttpRequest.Builder req =
        HttpRequest.newBuilder(URI.create(url + "/schemas/ids/" + schemaId))
            .timeout(Duration.ofSeconds(10))
            .header("Accept", "application/json");
    if (authorization != null) {
      req.header("Authorization", authorization);
    }
    HttpResponse<String> resp = http.send(req.build(), HttpResponse.BodyHandlers.ofString());
    if (resp.statusCode() == 404) {
      return null;
    }
    if (resp.statusCode() != 200) {
      throw new IOException("HTTP " + resp.statusCode() + " from the registry");
    }
    return json.readTree(resp.body()).get("schema").asText();
  }

  /** Whether raw starts with a Confluent wire-format header (magic byte 0, schema id). */
  public static boolean isWireFormat(byte[] raw) {
    return raw != null && raw.length >= 5 && raw[0] == 0;
  }

  /** The schema id of a Confluent wire-format record (see {@link #isWireFormat}). */
  public static int schemaId(byte[] raw) {
    return ((raw[1] & 0xff) << 24) | ((raw[2] & 0xff) << 16) | ((raw[3] & 0xff) << 8) | (raw[4] & 0xff);
  }
}
