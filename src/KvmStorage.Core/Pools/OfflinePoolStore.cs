using System.Xml;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Xml;

namespace KvmStorage.Core.Pools;

/// <summary>
/// Pools as libvirt keeps them on disk: <c>/etc/libvirt/storage/NAME.xml</c>, autostart links, and runtime state in
/// <c>/run/libvirt/storage</c>. Every change takes the folder's lock, re-reads, checks, and writes atomically,
/// so concurrent scripts never lose an update.
/// </summary>
public sealed class OfflinePoolStore
{
    private const UnixFileMode DefinitionMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode FolderMode = (UnixFileMode)0b111_101_101; // 0755, as libvirt makes /etc/libvirt/storage

    public OfflinePoolStore(HostPaths paths, string hostName)
    {
        Paths = paths;
        HostName = hostName;
    }

    public HostPaths Paths { get; }

    public string HostName { get; }

    private string LockPath => Path.Combine(Paths.StorageConfigDir, ".kvmstorage.lock");

    /// <summary>Reads every definition; a broken file becomes an error entry and the others are still listed.</summary>
    public IReadOnlyList<PoolReadResult> ReadAll()
    {
        string dir = Paths.StorageConfigDir;
        if (!Directory.Exists(dir))
        {
            return [];
        }

        var results = new List<PoolReadResult>();
        foreach (string file in Directory.EnumerateFiles(dir, "*.xml").Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal))
        {
            try
            {
                results.Add(new PoolReadResult(file, ReadFile(file), null));
            }
            catch (Exception ex) when (ex is KvmStorageException or IOException && PosixFile.Vanished(file))
            {
                // Undefined by another process since the folder was read: gone, not an error.
            }
            catch (KvmStorageException ex)
            {
                results.Add(new PoolReadResult(file, null, ex));
            }
        }

        return results;
    }

    /// <summary>One pool by exact name.</summary>
    public StoragePool Get(string name)
    {
        PoolNames.Validate(name);
        string file = DefinitionFile(name);
        if (!File.Exists(file))
        {
            throw NotFound(name);
        }

        return ReadFile(file);
    }

    /// <summary>Defines a new pool. Refuses an existing name or a target or source another pool already uses.</summary>
    public StoragePool Define(PoolDefinition definition, PoolDefineOptions options)
    {
        PoolNames.Validate(definition.Name);
        PoolTargetRules.Validate(definition);
        if (options.Build && definition.Type != PoolType.Dir)
        {
            throw new KvmStorageException(
                ErrorKind.NotSupported,
                PoolErrorIds.PoolTypeCannotBuild,
                $"Pool '{definition.Name}' is of type {definition.Type.ToXmlName()}: only dir pools can be built offline. Define it without -Build and build it with libvirt.",
                definition.Name);
        }

        EnsureFolders();
        using (FileLock.Acquire(LockPath))
        {
            AtomicFile.RemoveStaleTempFiles(Paths.StorageConfigDir, TimeSpan.FromMinutes(10));
            if (File.Exists(DefinitionFile(definition.Name)))
            {
                throw new KvmStorageException(ErrorKind.AlreadyExists, PoolErrorIds.PoolExists, $"A pool named '{definition.Name}' already exists.", definition.Name);
            }

            CheckConflicts(definition);
            definition.Uuid ??= Guid.NewGuid();
            if (ReadAll().Any(r => r.Pool is not null && r.Pool.Uuid == definition.Uuid))
            {
                throw new KvmStorageException(ErrorKind.AlreadyExists, PoolErrorIds.PoolExists, $"Another pool already has the UUID {definition.Uuid}.", definition.Name);
            }

            // Build first: a failure to create the folder must leave no definition behind.
            if (options.Build)
            {
                BuildTarget(definition);
            }

            WriteDefinition(definition);
            if (options.Autostart)
            {
                SetAutostartLink(definition.Name, true);
            }
        }

        return Get(definition.Name);
    }

    /// <summary>Rewrites an existing pool's definition after <paramref name="change"/>, keeping its UUID and everything else.</summary>
    public StoragePool Update(string name, Action<PoolDefinition> change, bool? autostart = null, bool applyPermissionsToTarget = true)
    {
        PoolNames.Validate(name);
        using (FileLock.Acquire(LockPath))
        {
            StoragePool current = Get(name);
            PoolDefinition edited = current.Redefinition(change);
            if (applyPermissionsToTarget && current.LocalPath is not null && Directory.Exists(current.LocalPath))
            {
                PoolTargetRules.ApplyPermissions(current.LocalPath, edited.Permissions);
            }

            WriteDefinition(edited);
            if (autostart is not null)
            {
                SetAutostartLink(name, autostart.Value);
            }
        }

        return Get(name);
    }

    /// <summary>Removes the definition and autostart link; with <paramref name="deleteTarget"/> also the target folder, which must be empty.</summary>
    public void Undefine(string name, bool deleteTarget)
    {
        PoolNames.Validate(name);
        using (FileLock.Acquire(LockPath))
        {
            StoragePool pool = Get(name);
            string? target = pool.LocalPath;
            if (deleteTarget && target is not null && Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            {
                throw new KvmStorageException(
                    ErrorKind.InvalidOperation,
                    PoolErrorIds.PoolTargetNotEmpty,
                    $"The target folder '{pool.Path}' of pool '{name}' is not empty; volumes are never deleted with a pool. Remove them first, or undefine without deleting the folder.",
                    name);
            }

            SetAutostartLink(name, false);
            File.Delete(DefinitionFile(name));
            AtomicFile.SyncDirectory(Paths.StorageConfigDir);
            if (deleteTarget && target is not null && Directory.Exists(target))
            {
                Directory.Delete(target);
            }
        }
    }

    public string DefinitionFile(string name) => Path.Combine(Paths.StorageConfigDir, name + ".xml");

    private StoragePool ReadFile(string file)
    {
        PoolDefinition definition;
        try
        {
            definition = PoolDefinition.FromXml(LibvirtXml.Load(file), file);
        }
        catch (XmlException ex)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"The pool file '{file}' is not well-formed XML: {ex.Message}", file, ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new KvmStorageException(ErrorKind.PermissionDenied, PoolErrorIds.PoolFileUnreadable, $"The pool file '{file}' cannot be read: {ex.Message}", file, ex);
        }
        catch (IOException ex)
        {
            throw new KvmStorageException(ErrorKind.ResourceUnavailable, PoolErrorIds.PoolFileUnreadable, $"The pool file '{file}' cannot be read: {ex.Message}", file, ex);
        }

        string name = definition.Name;
        if (Path.GetFileName(file) != name + ".xml")
        {
            // libvirt skips such a file at start: "config filename does not match pool name".
            throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"The pool file '{file}' defines pool '{PoolNames.Printable(name)}': libvirt requires the file to be named '{name}.xml'.", file);
        }

        string? local = null;
        if (definition.TargetPath is { } target && target.StartsWith('/'))
        {
            local = Paths.Resolve(target);
        }

        bool running = File.Exists(Path.Combine(Paths.StorageRunDir, name + ".xml"));
        FileSystemSpace space = default;
        int? volumes = null;
        if (local is not null && definition.Type.HoldsFileVolumes() && Directory.Exists(local))
        {
            try
            {
                space = FileSystemSpace.Get(local);
                volumes = Directory.EnumerateFiles(local).Count(e => !Path.GetFileName(e).StartsWith(AtomicFile.TempPrefix, StringComparison.Ordinal));
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return new StoragePool
        {
            Name = name,
            Uuid = definition.Uuid ?? Guid.Empty,
            PoolType = definition.Type,
            PoolState = running ? PoolState.Running : PoolState.Inactive,
            Autostart = IsAutostart(name),
            Persistent = true,
            Path = definition.TargetPath,
            LocalPath = local,
            Source = definition.Source,
            Permissions = definition.Permissions,
            Capacity = space.Capacity,
            Allocation = space.Allocation,
            Available = space.Available,
            VolumeCount = volumes,
            DefinitionPath = file,
            HostName = HostName,
            Definition = definition,
        };
    }

    /// <summary>An autostart entry is a link named NAME.xml pointing at the definition, absolute or relative.</summary>
    private bool IsAutostart(string name)
    {
        string link = Path.Combine(Paths.StorageAutostartDir, name + ".xml");
        var info = new FileInfo(link);
        if (info.LinkTarget is not { } target)
        {
            return info.Exists;
        }

        string hostTarget = target.StartsWith('/') ? target : Path.GetFullPath(Path.Combine("/etc/libvirt/storage/autostart", target));
        return Path.GetFileName(hostTarget) == name + ".xml";
    }

    private void SetAutostartLink(string name, bool enabled)
    {
        string link = Path.Combine(Paths.StorageAutostartDir, name + ".xml");
        if (File.Exists(link) || new FileInfo(link).LinkTarget is not null)
        {
            File.Delete(link);
        }

        if (enabled)
        {
            Directory.CreateDirectory(Paths.StorageAutostartDir);

            // libvirt makes the link absolute in the host's own view, whatever root the files are under.
            File.CreateSymbolicLink(link, "/etc/libvirt/storage/" + name + ".xml");
        }

        AtomicFile.SyncDirectory(Paths.StorageAutostartDir);
    }

    private void WriteDefinition(PoolDefinition definition)
    {
        string text = LibvirtXml.FormatFile(definition.Element, "virsh pool-edit " + definition.Name);
        AtomicFile.WriteAllText(DefinitionFile(definition.Name), text, DefinitionMode);
    }

    private void EnsureFolders()
    {
        foreach (string dir in new[] { Paths.StorageConfigDir, Paths.StorageAutostartDir })
        {
            if (!Directory.Exists(dir))
            {
                Directory.CreateDirectory(dir, FolderMode);
            }
        }
    }

    private void CheckConflicts(PoolDefinition definition) => PoolTargetRules.CheckConflicts(definition, ReadAll().Select(r => r.Pool).OfType<StoragePool>());

    private void BuildTarget(PoolDefinition definition)
    {
        string local = Paths.Resolve(definition.TargetPath!);
        Permissions permissions = definition.Permissions;
        UnixFileMode mode = permissions.Mode ?? Permissions.DefaultPoolMode;
        if (!Directory.Exists(local))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(local)!);
            Directory.CreateDirectory(local, mode);
        }

        PoolTargetRules.ApplyPermissions(local, permissions with { Mode = mode });
    }

    private static KvmStorageException NotFound(string name) =>
        new(ErrorKind.NotFound, PoolErrorIds.PoolNotFound, $"No storage pool named '{PoolNames.Printable(name)}' is defined.", name);
}
