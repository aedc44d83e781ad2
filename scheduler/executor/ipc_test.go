package executor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSysvipc(t *testing.T) {
	shm := `       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0          7   600                  4096  1234     0      0 2147000001 2147000001 2147000001 2147000001          0          0 1795692948                     0                     0
     12345          9   666                  8192  1235     0      1     0     0 2147000002     0          0          0 1795692948                  4096                     0
`
	got, err := parseSysvipc([]byte(shm))
	require.NoError(t, err)
	require.Equal(t, []sysvObject{{id: 7, uid: 2147000001, cuid: 2147000001}, {id: 9, uid: 0, cuid: 2147000002}}, got)

	sem := "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n"
	got, err = parseSysvipc([]byte(sem))
	require.NoError(t, err)
	require.Empty(t, got)

	for name, bad := range map[string]string{
		"empty":         "",
		"no uid column": "key shmid perms\n1 2 3\n",
		"short line":    "key shmid uid cuid\n1 2 3\n",
		"not a number":  "key shmid uid cuid\n1 x 3 4\n",
	} {
		_, err := parseSysvipc([]byte(bad))
		require.Error(t, err, name)
	}
}

func FuzzParseSysvipc(f *testing.F) {
	f.Add([]byte("key shmid uid cuid\n1 2 3 4\n"))
	f.Add([]byte("       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := parseSysvipc(data)
		if err != nil && objs != nil {
			t.Fatalf("objects with an error: %v", objs)
		}
	})
}
