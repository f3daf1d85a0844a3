using System.Runtime.InteropServices;

namespace KvmStorage.Core.IO;

/// <summary>Ownership changes, which .NET has no API for.</summary>
public static class PosixFile
{
    /// <summary>Sets the owner and/or group; -1 leaves one unchanged, as chown(2) does.</summary>
    public static void SetOwner(string path, int uid, int gid)
    {
        if (uid < 0 && gid < 0)
        {
            return;
        }

        if (NativeMethods.chown(path, uid, gid) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new UnauthorizedAccessException($"Cannot change the owner of '{path}' to {uid}:{gid}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
    }

    public static bool IsRoot => NativeMethods.geteuid() == 0;
}
