package binlog

import (
	"testing"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
