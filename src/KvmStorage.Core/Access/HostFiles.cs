using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Access;

/// <summary>
/// The one door to a host's files. Every path a command reaches goes through it: a path the user typed (one rule for
/// every path parameter), a pool's folder, and every backing file an image names (<see cref="BackingRule"/>).
/// </summary>
/// <remarks>
/// The rules, in one place:
/// <list type="bullet">
/// <item>Paths are the host's view, resolved under the host root: <c>/var/lib/libvirt/images/x.qcow2</c> is
/// <c>&lt;root&gt;/var/lib/libvirt/images/x.qcow2</c>. An absolute path that already lies under the root is a local
/// path and maps back to its host view; a relative path (or <c>~</c>) is local, against the current location, and must
/// lie under the root.</item>
/// <item>Nothing is reached outside the root: not through <c>..</c>, not through a link (a file, a pool folder, or a
/// folder on the way).</item>
/// <item>A backing file is read only when it lies inside a file pool's folder or is an image of a recognised format:
/// a raw or unrecognised file elsewhere (<c>/etc/shadow</c>) would hand its bytes to a guest.</item>
/// </list>
/// With the root <c>/</c> the first two rules are the file system's own; the third always holds.
/// </remarks>
public sealed class HostFiles
{
    private readonly IKvmHost host;
    private string? realRoot;
    private IReadOnlyList<(string Pool, string Folder, string RealFolder)>? poolFolders;

    public HostFiles(IKvmHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        this.host = host;
        BackingRule = new HostBackingRule(this, hostView: true);
        LocalBackingRule = new HostBackingRule(this, hostView: false);
    }

    public HostPaths Paths => host.Paths;

    /// <summary>The rule every backing chain this host's commands open is checked with.</summary>
    public Images.BackingFileRule BackingRule { get; }

    /// <summary>
    /// The same rule for an image given as a file of this machine rather than of the host (Import-Volume's source):
    /// its backing names are local paths, and a raw or unrecognised file outside every pool is still never read.
    /// </summary>
    public Images.BackingFileRule LocalBackingRule { get; }

    /// <summary>The root with its links resolved (the root itself may be a link, as /tmp often is).</summary>
    internal string RealRoot => realRoot ??= PosixFile.RealPath(Paths.Root) ?? Paths.Root;

    /// <summary>
    /// A path as the user typed it (<paramref name="typed"/>) and as PowerShell resolved it against the current
    /// location (<paramref name="local"/>), to the file on this machine, by the rule above.
    /// </summary>
    /// <exception cref="KvmStorageException"><see cref="AccessErrorIds.PathOutsideHostRoot"/>.</exception>
    public string ResolveUserPath(string typed, string local)
    {
        ArgumentNullException.ThrowIfNull(typed);
        ArgumentNullException.ThrowIfNull(local);
        string resolved;
        if (typed.StartsWith('/'))
        {
            string full = Path.GetFullPath(typed);
            resolved = !Paths.IsSystemRoot && PosixFile.IsUnder(full, Paths.Root) ? full : Paths.Resolve(full);
        }
        else
        {
            return ResolveLocalPath(local, typed);
        }

        EnsureUnderRoot(resolved, typed);
        return resolved;
    }

    /// <summary>
    /// A path of this machine (a relative path resolved against the current location, a file from Get-ChildItem): it
    /// must lie under the host root, where it maps back to its host view.
    /// </summary>
    public string ResolveLocalPath(string local, string? typed = null)
    {
        ArgumentNullException.ThrowIfNull(local);
        string resolved = Path.GetFullPath(local);
        if (!Paths.IsSystemRoot && !PosixFile.IsUnder(resolved, Paths.Root))
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                AccessErrorIds.PathOutsideHostRoot,
                $"'{typed ?? local}' is '{resolved}' on this machine, outside the host root '{Paths.Root}'. Relative paths are taken from the current location; give the path as the host sees it (for example /var/lib/libvirt/images/x.qcow2).",
                typed ?? local);
        }

        EnsureUnderRoot(resolved, typed ?? local);
        return resolved;
    }

    /// <summary>
    /// The pattern to expand on this machine for a path pattern the user typed: a host-view pattern
    /// (<c>/var/lib/libvirt/images/*.qcow2</c>) is expanded under the root; others as they are.
    /// </summary>
    public string LocalPattern(string typed)
    {
        ArgumentNullException.ThrowIfNull(typed);
        return typed.StartsWith('/') && !Paths.IsSystemRoot && !PosixFile.IsUnder(typed, Paths.Root) ? Paths.Root + typed : typed;
    }

    /// <summary>A path recorded by the host (a volume's or a disk's <c>Path</c>), to the file on this machine.</summary>
    public string ResolveHostPath(string hostPath) => ResolveUserPath(hostPath, hostPath);

    /// <summary>
    /// Refuses a local path that leads out of the host root through a link (in the file itself or in a folder on the
    /// way); for a path that does not exist yet, where it would be created.
    /// </summary>
    public void EnsureUnderRoot(string local, object? target = null)
    {
        if (Paths.IsSystemRoot)
        {
            return;
        }

        string real = PosixFile.RealPathOfNew(local);
        if (!PosixFile.IsUnder(real, RealRoot))
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                AccessErrorIds.PathOutsideHostRoot,
                $"'{Paths.ToHostPath(local) ?? local}' leads to '{real}' through a link, outside the host root '{Paths.Root}'; the module does not read or write through it.",
                target ?? local);
        }
    }

    /// <summary>
    /// The folder of a file pool, checked: a pool whose folder is (or lies behind) a link out of the host root is
    /// refused before anything in it is read or written.
    /// </summary>
    public string PoolFolder(StoragePool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        string folder = pool.LocalPath ?? throw new KvmStorageException(ErrorKind.NotSupported, VolumeErrorIds.PoolHasNoFolder, $"Pool '{pool.Name}' has no folder to hold image files.", pool.Name);
        EnsureUnderRoot(folder, pool.Name);
        return folder;
    }

    /// <summary>A volume of <paramref name="pool"/> that is a link resolving outside the pool's folder is refused.</summary>
    public static void EnsureInsidePool(StoragePool pool, string file, string name)
    {
        ArgumentNullException.ThrowIfNull(pool);
        var info = new FileInfo(file);
        if (info.LinkTarget is null)
        {
            return;
        }

        string folder = Path.TrimEndingDirectorySeparator(Path.GetFullPath(pool.LocalPath!));
        string resolved = PosixFile.RealPath(file) ?? info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? string.Empty;
        string realFolder = PosixFile.RealPath(folder) ?? folder;
        if (Path.GetDirectoryName(resolved) != realFolder && Path.GetDirectoryName(resolved) != folder)
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                VolumeErrorIds.VolumeOutsidePool,
                $"Volume '{name}' of pool '{pool.Name}' is a link to '{info.LinkTarget}', outside the pool folder; the module does not read or write through it.",
                name);
        }
    }

    /// <summary>The file pool whose folder holds <paramref name="localFile"/> (by the file's own folder, links not followed), or null.</summary>
    public string? PoolOf(string localFile)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(localFile))!;
        return PoolFolders().Where(p => p.Folder == folder).Select(p => p.Pool).FirstOrDefault();
    }

    /// <summary>True when the real path of <paramref name="localFile"/> lies directly in the real folder of a file pool.</summary>
    public bool IsInsidePool(string localFile)
    {
        string? real = PosixFile.RealPath(localFile);
        if (real is null)
        {
            return false;
        }

        string folder = Path.GetDirectoryName(real)!;
        return PoolFolders().Any(p => p.RealFolder == folder);
    }

    // Listed (and their links resolved) once per HostFiles: a listing checks many backing files against them.
    private IReadOnlyList<(string Pool, string Folder, string RealFolder)> PoolFolders() => poolFolders ??= host.ListPools()
        .Select(r => r.Pool)
        .Where(p => p is not null && p.PoolType.HoldsFileVolumes() && p.LocalPath is not null)
        .Select(p =>
        {
            string folder = Path.TrimEndingDirectorySeparator(Path.GetFullPath(p!.LocalPath!));
            return (p.Name, folder, PosixFile.RealPath(folder) ?? folder);
        })
        .ToList();
}
