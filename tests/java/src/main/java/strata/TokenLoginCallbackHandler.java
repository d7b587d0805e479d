package strata;

import java.util.List;
import java.util.Map;
import java.util.Set;

import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;

import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerTokenCallback;

/**
 * Gives the Java client's SASL/OAUTHBEARER login a Strata bearer token as is (Strata's
 * tokens are opaque, not JWTs): the JAAS option {@code token}.
 *
 * <pre>
 * sasl.mechanism=OAUTHBEARER
 * sasl.login.callback.handler.class=strata.TokenLoginCallbackHandler
 * sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required token="...";
 * </pre>
 */
public final class TokenLoginCallbackHandler implements AuthenticateCallbackHandler {
    private String token;

    @Override
    public void configure(Map<String, ?> configs, String mechanism, List<AppConfigurationEntry> entries) {
        token = (String) entries.get(0).getOptions().get("token");
    }

    @Override
    public void handle(Callback[] callbacks) throws UnsupportedCallbackException {
        for (Callback callback : callbacks) {
            if (!(callback instanceof OAuthBearerTokenCallback tokenCallback)) {
                throw new UnsupportedCallbackException(callback);
            }
            long now = System.currentTimeMillis();
            tokenCallback.token(new OAuthBearerToken() {
                public String value() { return token; }
                public Set<String> scope() { return Set.of(); }
                public long lifetimeMs() { return now + 3_600_000; }
                public String principalName() { return "strata"; }
                public Long startTimeMs() { return now; }
            });
        }
    }

    @Override
    public void close() {}
}
