using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Backends;

/// <summary>
/// Resolves the host's absolute paths under a host root (default <c>/</c>), so a sandbox folder or a host
/// image mounted elsewhere is handled exactly like the real host.
/// </summary>
public sealed class HostPaths
{
    /// <summary>The environment variable that sets the session's host root.</summary>
    public const string RootVariable = "KVMSTORAGE_ROOT";

    public HostPaths(string root)
    {
        if (string.IsNullOrWhiteSpace(root) || !Path.IsPathFullyQualified(root))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidHostRoot, $"The host root '{root}' must be an absolute path.", root);
        }

        string full = Path.GetFullPath(root);
        Root = full.Length > 1 ? full.TrimEnd('/') : full;
    }

    /// <summary>The host root as given, normalised, without a trailing slash (except for <c>/</c>).</summary>
    public string Root { get; }

    public bool IsSystemRoot => Root == "/";

    public string StorageConfigDir => Resolve("/etc/libvirt/storage");

    public string StorageAutostartDir => Resolve("/etc/libvirt/storage/autostart");

    public string StorageRunDir => Resolve("/run/libvirt/storage");

    public string QemuConfigDir => Resolve("/etc/libvirt/qemu");

    public string QemuRunDir => Resolve("/run/libvirt/qemu");

    /// <summary>The session's root: the <c>KVMSTORAGE_ROOT</c> variable, else <c>/</c>.</summary>
    public static HostPaths FromEnvironment()
    {
        string? root = Environment.GetEnvironmentVariable(RootVariable);
        return new HostPaths(string.IsNullOrEmpty(root) ? "/" : root);
    }

    /// <summary>Maps an absolute host path (as written in libvirt's files) to where it lies under the root.</summary>
    public string Resolve(string hostPath)
    {
        if (!hostPath.StartsWith('/'))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidTargetPath, $"The host path '{hostPath}' is not absolute.", hostPath);
        }

        string normalized = Path.GetFullPath(hostPath);
        return IsSystemRoot ? normalized : Root + (normalized == "/" ? string.Empty : normalized);
    }

    /// <summary>
    /// <paramref name="text"/> (an error message) with every local path under the root written as the host sees it,
    /// so that messages name files the way objects do.
    /// </summary>
    public string ToHostView(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return IsSystemRoot ? text : text.Replace(Root + "/", "/", StringComparison.Ordinal);
    }

    /// <summary>Maps a path under the root back to the host's own view of it; null when it lies outside the root.</summary>
    public string? ToHostPath(string localPath)
    {
        string full = Path.GetFullPath(localPath);
        if (IsSystemRoot)
        {
            return full;
        }

        if (full == Root)
        {
            return "/";
        }

        return full.StartsWith(Root + "/", StringComparison.Ordinal) ? full[Root.Length..] : null;
    }
}
