package replicator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/pipeline"
)

// kafkaConfig is how every part of a replicator command reaches the
// brokers: the producer, the peers' readers, topic creation and seed's
// end offsets all connect with the same TLS and SASL settings.
func kafkaConfig(cfg *config.Config) (pipeline.KafkaConfig, error) {
	kc := pipeline.KafkaConfig{
		Brokers:           cfg.Kafka.Brokers,
		Partitions:        cfg.Kafka.Partitions,
		ReplicationFactor: cfg.Kafka.ReplicationFactor,
		ClientID:          cfg.Kafka.ClientID,
		AcksOne:           cfg.Kafka.Acks == config.AcksOne,
	}
	var err error
	if kc.TLS, err = cfg.Kafka.TLSConfig(); err != nil {
		return kc, err
	}
	if s := &cfg.Kafka.SASL; s.Enabled() {
		if kc.SASL, err = pipeline.NewSASL(s.Mechanism, s.Username, s.Password.Reveal()); err != nil {
			return kc, fmt.Errorf("kafka.sasl: %w", err)
		}
	}
	return kc, nil
}

// kafkaHint adds to a broker error the setting that most likely causes it
// when the cause is the connection's security, which kafka-go reports in
// terms of the protocol (an error code, an x509 failure, an EOF).
func kafkaHint(cfg *config.Config, err error) error {
	if err == nil {
		return nil
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		notTLS    tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		return fmt.Errorf("%w (the brokers refused kafka.sasl.username %q with this password and mechanism %s; check the user and its password, which are never logged)",
			err, cfg.Kafka.SASL.Username, cfg.Kafka.SASL.Mechanism)
	case errors.Is(err, kafka.UnsupportedSASLMechanism):
		return fmt.Errorf("%w (the brokers do not offer kafka.sasl.mechanism %s; allowed: one their listener enables in sasl.enabled.mechanisms)", err, cfg.Kafka.SASL.Mechanism)
	case errors.Is(err, kafka.IllegalSASLState) && !cfg.Kafka.SASL.Enabled():
		return fmt.Errorf("%w (the brokers require SASL; set kafka.sasl)", err)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w (the brokers' certificate is not signed by a CA in kafka.tls.ca_file, or by a system root when it is empty)", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w (the brokers' certificate does not name the broker address; set kafka.tls.server_name to a name it holds)", err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w (the brokers' certificate is not valid for this connection: expired, or not for server use)", err)
	case strings.Contains(err.Error(), "tls: certificate required"):
		// A TLS alert from the broker; crypto/tls has no exported type
		// for it.
		return fmt.Errorf("%w (the brokers require a client certificate; set kafka.tls.cert_file and kafka.tls.key_file)", err)
	case errors.As(err, &notTLS):
		return fmt.Errorf("%w (kafka.tls is enabled but the brokers' listener does not speak TLS; disable kafka.tls or use their SSL/SASL_SSL port)", err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		// A TLS listener drops a plaintext request, a SASL listener
		// one that did not authenticate, both without a word.
		var missing []string
		if !cfg.Kafka.TLS.Enabled {
			missing = append(missing, "TLS (kafka.tls)")
		}
		if !cfg.Kafka.SASL.Enabled() {
			missing = append(missing, "SASL (kafka.sasl)")
		}
		if len(missing) > 0 {
			return fmt.Errorf("%w (the brokers closed the connection without an answer: their listener may require %s)", err, strings.Join(missing, " or "))
		}
	}
	return err
}
