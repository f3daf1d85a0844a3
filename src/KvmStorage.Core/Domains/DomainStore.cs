using System.Xml;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Names;
using KvmStorage.Core.Xml;

namespace KvmStorage.Core.Domains;

/// <summary>One definition file of <see cref="DomainStore.List"/>: the domain, or why it could not be read.</summary>
public sealed record DomainFileEntry(string Name, string Path, DomainDefinition? Definition, KvmStorageException? Error);

/// <summary>
/// The offline backend for domains: the persistent files <c>&lt;root&gt;/etc/libvirt/qemu/NAME.xml</c>, written exactly as
/// libvirt keeps them, and the runtime state files under <c>&lt;root&gt;/run/libvirt/qemu</c>. Writers in any process
/// serialise on one lock file, and <see cref="Edit{T}"/> re-reads under the lock so concurrent edits are not lost.
/// libvirtd reads these files only when it starts, and rewrites them from memory on each change made through it.
/// </summary>
public sealed class DomainStore
{
    /// <summary>The lock file's name inside the qemu config folder.</summary>
    public const string LockFileName = ".kvmstorage.lock";

    private const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public DomainStore(HostPaths paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        Paths = paths;
    }

    public HostPaths Paths { get; }

    public string ConfigDirectory => Paths.QemuConfigDir;

    public string LockPath => Path.Combine(ConfigDirectory, LockFileName);

    /// <summary>The persistent file of a domain (under the host root).</summary>
    public string ConfigPath(string name)
    {
        ValidateName(name);
        return Path.Combine(ConfigDirectory, name + ".xml");
    }

    /// <summary>Every definition file, each read on its own: one broken file is reported, the others still listed.</summary>
    public IReadOnlyList<DomainFileEntry> List()
    {
        if (!Directory.Exists(ConfigDirectory))
        {
            return [];
        }

        var entries = new List<DomainFileEntry>();
        foreach (string file in Directory.EnumerateFiles(ConfigDirectory, "*.xml").Order(StringComparer.Ordinal))
        {
            string fileName = Path.GetFileName(file);
            if (fileName.StartsWith('.'))
            {
                continue;
            }

            string name = Path.GetFileNameWithoutExtension(fileName);
            try
            {
                entries.Add(new DomainFileEntry(name, file, LoadFile(file, name), null));
            }
            catch (Exception e) when (e is KvmStorageException or IOException && PosixFile.Vanished(file))
            {
                // Undefined by another process since the folder was read: gone, not an error.
            }
            catch (KvmStorageException e)
            {
                entries.Add(new DomainFileEntry(name, file, null, e));
            }
        }

        return entries;
    }

    /// <summary>The definitions that could be read.</summary>
    public IReadOnlyList<DomainDefinition> ListDefinitions() =>
        List().Where(e => e.Definition is not null).Select(e => e.Definition!).ToList();

    /// <summary>Reads one domain; <see cref="DomainErrorIds.VMNotFound"/> when it has no file.</summary>
    public DomainDefinition Get(string name)
    {
        string path = ConfigPath(name);
        if (!File.Exists(path))
        {
            throw new KvmStorageException(ErrorKind.NotFound, DomainErrorIds.VMNotFound, $"No domain named '{name}' is defined (no file '{path}').", name);
        }

        return LoadFile(path, name);
    }

    public bool Exists(string name) => File.Exists(ConfigPath(name));

    /// <summary>Writes the definition as libvirt would (header, format, mode 0600), atomically and under the lock.</summary>
    public void Save(DomainDefinition definition)
    {
        ArgumentNullException.ThrowIfNull(definition);
        using FileLock _ = FileLock.Acquire(LockPath);
        Write(definition);
    }

    /// <summary>
    /// Lock, re-read the domain, apply <paramref name="mutate"/>, write, unlock. When <paramref name="mutate"/> throws,
    /// nothing is written.
    /// </summary>
    public T Edit<T>(string name, Func<DomainDefinition, T> mutate)
    {
        ArgumentNullException.ThrowIfNull(mutate);
        using FileLock _ = FileLock.Acquire(LockPath);
        DomainDefinition definition = Get(name);
        T result = mutate(definition);
        if (definition.Name != name)
        {
            // Renaming is libvirt's job (virsh domrename): a second file with the same UUID would clash at start.
            throw new KvmStorageException(ErrorKind.InvalidOperation, DomainErrorIds.DomainNameMismatch, $"An edit of '{name}' may not rename it to '{definition.Name}'.", name);
        }

        Write(definition);
        return result;
    }

    /// <summary>The state in the runtime file (<c>&lt;domstatus state=…&gt;</c>), or null when the domain is not active.</summary>
    public string? GetRuntimeState(string name)
    {
        ValidateName(name);
        string path = Path.Combine(Paths.QemuRunDir, name + ".xml");
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            var root = LibvirtXml.Load(path);
            if (root.Name != "domstatus")
            {
                throw new KvmStorageException(ErrorKind.InvalidData, DomainErrorIds.RuntimeStateUnreadable, $"The runtime state file '{path}' holds <{root.Name.LocalName}>, not <domstatus>.", path);
            }

            return (string?)root.Attribute("state") ?? string.Empty;
        }
        catch (XmlException e)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, DomainErrorIds.RuntimeStateUnreadable, $"The runtime state file '{path}' is not well-formed XML: {e.Message}", path, e);
        }
    }

    /// <summary>True when libvirt's runtime state file says the domain is running.</summary>
    public bool IsRunning(string name) => GetRuntimeState(name) == "running";

    /// <summary>True when the domain has a qemu process in any state (running, paused, …): a runtime file exists.</summary>
    public bool IsActive(string name) => GetRuntimeState(name) is not null;

    /// <summary>The disks of every readable domain whose file or block source is <paramref name="hostPath"/>.</summary>
    public IReadOnlyList<DomainDisk> FindDisksUsing(string hostPath) => FindDisksUsing(hostPath, null);

    /// <summary>
    /// As <see cref="FindDisksUsing(string)"/>; <paramref name="volumePath"/> maps a <c>type='volume'</c> disk's
    /// (pool, volume) to its host path, so such disks are matched too (null: they are not).
    /// </summary>
    public IReadOnlyList<DomainDisk> FindDisksUsing(string hostPath, Func<string, string, string?>? volumePath)
    {
        ArgumentNullException.ThrowIfNull(hostPath);
        return FindDisksUsing([hostPath], volumePath)[hostPath];
    }

    /// <summary>
    /// For each host path, the disks that use it as their source; all domains are read once. Paths are compared after
    /// normalising <c>.</c> and <c>..</c>, not through symlinks, and backing files are not followed.
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<DomainDisk>> FindDisksUsing(IEnumerable<string> hostPaths, Func<string, string, string?>? volumePath = null)
    {
        ArgumentNullException.ThrowIfNull(hostPaths);
        var wanted = hostPaths.Distinct(StringComparer.Ordinal).ToList();
        var byNormal = wanted.GroupBy(Normalize, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var found = wanted.ToDictionary(p => p, _ => new List<DomainDisk>(), StringComparer.Ordinal);
        foreach (DomainDefinition definition in ListDefinitions())
        {
            foreach (DomainDisk disk in definition.Disks)
            {
                string? source = disk.SourcePath;
                if (source is null && volumePath is not null && disk.SourcePool is string pool && disk.SourceVolume is string volume)
                {
                    source = volumePath(pool, volume);
                }

                if (source is not null && source.StartsWith('/') && byNormal.TryGetValue(Normalize(source), out List<string>? keys))
                {
                    foreach (string key in keys)
                    {
                        found[key].Add(disk);
                    }
                }
            }
        }

        return found.ToDictionary(p => p.Key, p => (IReadOnlyList<DomainDisk>)p.Value, StringComparer.Ordinal);
    }

    internal static void ValidateName(string name)
    {
        string? problem = CheckName(name);
        if (problem is not null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, DomainErrorIds.InvalidVMName, $"'{NameRules.Printable(name)}' is not a valid domain name: {problem}.", name);
        }
    }

    /// <summary>Why <paramref name="name"/> cannot name a domain (the shared <see cref="NameRules"/>, then the file <c>&lt;name&gt;.xml</c>'s), or null.</summary>
    internal static string? CheckName(string? name)
    {
        string? shared = NameRules.Check(name);
        if (shared is not null || name is null)
        {
            return shared;
        }

        if (NameRules.ByteCount(name) > NameRules.MaxFileNameBytes - ".xml".Length)
        {
            return $"it is longer than {NameRules.MaxFileNameBytes - ".xml".Length} bytes";
        }

        if (name.Contains('/', StringComparison.Ordinal))
        {
            return "it contains '/'";
        }

        return name.StartsWith('.') ? "it starts with '.'" : null;
    }

    private static string Normalize(string hostPath) => hostPath.StartsWith('/') ? Path.GetFullPath(hostPath) : hostPath;

    private static DomainDefinition LoadFile(string path, string expectedName)
    {
        DomainDefinition definition = DomainDefinition.Load(path);

        // libvirtd skips a file whose name differs from <name> at start ("does not match domain name").
        if (definition.Name != expectedName)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidData,
                DomainErrorIds.DomainNameMismatch,
                $"The domain file '{path}' defines '{definition.Name}', not '{expectedName}'; libvirt would skip it.",
                path);
        }

        return definition;
    }

    private void Write(DomainDefinition definition)
    {
        string path = ConfigPath(definition.Name);
        try
        {
            Directory.CreateDirectory(ConfigDirectory);
            AtomicFile.WriteAllText(path, definition.ToFileText(), FileMode);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KvmStorageException(ErrorKind.WriteError, ErrorIds.WriteFailed, $"Cannot write the domain file '{path}': {e.Message}", path, e);
        }
    }
}
