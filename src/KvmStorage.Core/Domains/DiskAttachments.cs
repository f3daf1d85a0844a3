using KvmStorage.Core.Access;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Domains;

/// <summary>
/// VM disks across domains and volumes: what each VM has attached, attaching an image with the checks libvirt
/// leaves to its callers (the image's real format, who else uses it), changing and detaching disks.
/// </summary>
public sealed class DiskAttachments
{
    private readonly IKvmHost host;
    private HostFiles? files;

    public DiskAttachments(IKvmHost host) => this.host = host;

    /// <summary>
    /// The disks of one domain, each with its image resolved where it can be read. With the running VM's definition
    /// (<paramref name="live"/>), a disk in both with the same source is one disk of scope Both; a disk only in the
    /// running VM (hot-plugged with -Live) is listed with scope Live, one only in the persistent definition with
    /// scope Persistent; a target whose source differs between the two is listed twice.
    /// </summary>
    public IReadOnlyList<VMDisk> GetDisks(DomainDefinition domain, DomainDefinition? live = null)
    {
        ArgumentNullException.ThrowIfNull(domain);
        if (live is null)
        {
            return domain.Disks.Select(d => ToVMDisk(d, VMDiskScope.Persistent)).ToList();
        }

        var result = new List<VMDisk>();
        List<DomainDisk> liveOnly = [.. live.Disks];
        foreach (DomainDisk disk in domain.Disks)
        {
            DomainDisk? running = liveOnly.Find(l => l.Target == disk.Target && SameSource(l, disk));
            if (running is not null)
            {
                liveOnly.Remove(running);
            }

            result.Add(ToVMDisk(disk, running is null ? VMDiskScope.Persistent : VMDiskScope.Both));
        }

        result.AddRange(liveOnly.Select(l => ToVMDisk(l, VMDiskScope.Live)));
        return result;
    }

    /// <summary>The disks of one VM: its persistent definition merged with the running VM's (see <see cref="GetDisks(DomainDefinition, DomainDefinition?)"/>).</summary>
    public IReadOnlyList<VMDisk> GetDisks(string vmName) => GetDisks(host.GetDomain(vmName), host.GetLiveDomain(vmName));

    public VMDisk Attach(DiskAttachRequest request)
    {
        DomainDefinition domain = host.GetDomain(request.VMName);
        StorageVolume? volume = ResolveImage(request);
        if (volume is null && request.Device == "disk")
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, DomainErrorIds.InvalidDiskSource, "A disk needs an image: give a volume, a path, or a pool and a volume name. Only a cdrom or floppy drive can be empty.", request.VMName);
        }

        if (volume is not null)
        {
            CheckOtherUsers(domain.Name, volume, request);

            // A guest given a regular file from outside the pools reads and may write whatever that file is (a host
            // file named by mistake, or through a hostile script). Read-only cdrom media are the usual exception.
            bool readOnlyMedia = request.Device == "cdrom" || (request.Device == "floppy" && request.Settings.ReadOnly == true);
            if (volume.Pool is null && !request.Force && !readOnlyMedia && ImageInspector.IsRegularFile(volume.LocalPath))
            {
                throw new KvmStorageException(
                    ErrorKind.PermissionDenied,
                    AccessErrorIds.FileOutsidePools,
                    $"'{volume.Path}' is a file outside every storage pool; a VM given it could read and write it. Move or import it into a pool (Import-Volume), or use -Force if it really is meant as this VM's disk.",
                    volume.Path);
            }
        }

        if (request.AsVolumeSource && (volume?.Pool is null))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, DomainErrorIds.InvalidDiskSource, "-AsVolumeSource needs an image that is a volume of a storage pool.", request.VMName);
        }

        Guid? secret = volume is null ? null : LuksSecretOf(volume, request.SecretUuid);
        var spec = new DiskSpec
        {
            LuksSecret = secret,
            SourcePath = request.AsVolumeSource ? null : volume?.Path,
            Pool = request.AsVolumeSource ? volume!.Pool : null,
            Volume = request.AsVolumeSource ? volume!.Name : null,
            AsVolumeSource = request.AsVolumeSource,
            SourceIsBlockDevice = volume is not null && IsBlockDevice(volume.LocalPath),

            // libvirt reads a missing driver type as raw, which would show a qcow2 container to the guest. A LUKS file
            // is raw to libvirt: the <encryption> makes qemu open it with its luks driver.
            Format = volume?.Format == "luks" ? "raw" : volume?.Format,
            Target = request.Target,
            Bus = request.Bus,
            Device = request.Device,
            Settings = request.Settings,
        };
        DomainDisk added = host.AttachDisk(domain.Name, spec, request.Scope);
        return AsNowDefined(domain.Name, added);
    }

    /// <summary>
    /// The secret a VM needs to open an encrypted image: the one named, else the one libvirt would match by usage (the
    /// image's host path). Without one the VM could not start, so the attach is refused before anything is written.
    /// </summary>
    private Guid? LuksSecretOf(StorageVolume volume, Guid? named)
    {
        if (volume.Encryption is null)
        {
            return named is null ? null : throw new KvmStorageException(ErrorKind.InvalidArgument, Images.Luks.LuksErrorIds.InvalidEncryptionOptions, $"'{volume.Path}' is not encrypted; -SecretUuid applies to encrypted volumes only.", volume.Path);
        }

        if (volume.Encryption != "luks")
        {
            throw new KvmStorageException(ErrorKind.NotSupported, Images.Block.BlockErrorIds.ImageEncrypted, $"'{volume.Path}' uses qcow2's legacy AES encryption, which QEMU no longer opens; convert it to LUKS first.", volume.Path);
        }

        IReadOnlyList<Secrets.VolumeSecret> secrets = host.ListSecrets();
        if (named is { } uuid)
        {
            return secrets.Any(s => s.Uuid == uuid)
                ? uuid
                : throw new KvmStorageException(ErrorKind.NotFound, Secrets.SecretErrorIds.SecretNotFound, $"No secret with UUID {uuid} is defined on {host.Name}.", uuid);
        }

        return secrets.FirstOrDefault(s => s.UsageType == "volume" && s.Usage == volume.Path)?.Uuid
            ?? throw new KvmStorageException(
                ErrorKind.NotFound,
                Secrets.SecretErrorIds.SecretNotFound,
                $"'{volume.Path}' is encrypted and no libvirt secret is defined for it, so the VM could not open it: define one with New-VolumeSecret, or name one with -SecretUuid.",
                volume.Path);
    }

    public VMDisk Update(string vmName, string target, DiskUpdate update, DeviceScope scope = DeviceScope.Default)
    {
        DomainDisk updated = host.UpdateDisk(vmName, target, update, scope);
        return AsNowDefined(vmName, updated);
    }

    /// <summary>Inserts, changes or (with null) ejects the medium of a cdrom or floppy drive.</summary>
    public VMDisk ChangeMedia(string vmName, string target, string? localImagePath, DeviceScope scope = DeviceScope.Default)
    {
        StorageVolume? volume = localImagePath is null ? null : host.GetVolumeByPath(localImagePath);
        DomainDisk changed = host.ChangeDiskMedia(vmName, target, volume?.Path, volume?.Format, scope);
        return AsNowDefined(vmName, changed);
    }

    /// <summary>The default wait for a guest to release a hot-unplugged disk.</summary>
    public static readonly TimeSpan DefaultLiveDetachTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Removes a disk (from the persistent definition, and from the running VM where the backend can) and returns what it was.</summary>
    public VMDisk Detach(string vmName, string target, DeviceScope scope = DeviceScope.Default, TimeSpan? liveTimeout = null)
    {
        if (!scope.HasFlag(DeviceScope.Live) && !GetDisks(vmName).Any(d => d.Target == target))
        {
            throw new KvmStorageException(ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"VM '{vmName}' has no disk '{target}'.", target);
        }

        DomainDisk removed = host.DetachDisk(vmName, target, scope, liveTimeout ?? DefaultLiveDetachTimeout);
        return ToVMDisk(removed, VMDiskScope.Persistent);
    }

    /// <summary>For each host path of an image, the VMs using it directly or as a backing file of an attached image.</summary>
    public IReadOnlyDictionary<string, SortedSet<string>> BuildAttachmentIndex()
    {
        var index = new Dictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        foreach (DomainFileEntry entry in host.ListDomains())
        {
            if (entry.Definition is not { } domain)
            {
                continue;
            }

            foreach (DomainDisk disk in WithLiveDisks(domain))
            {
                string? source = SourceHostPath(disk);
                if (source is null)
                {
                    continue;
                }

                foreach (string path in ChainOf(source))
                {
                    if (!index.TryGetValue(path, out SortedSet<string>? vms))
                    {
                        index[path] = vms = new SortedSet<string>(StringComparer.Ordinal);
                    }

                    vms.Add(domain.Name);
                }
            }
        }

        return index;
    }

    private IEnumerable<string> ChainOf(string hostPath)
    {
        yield return hostPath;
        string local = host.Paths.Resolve(hostPath);
        ImageInfo? info = null;
        try
        {
            if (File.Exists(local) && !IsBlockDevice(local))
            {
                info = ImageInspector.Inspect(local, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true, BackingRule = (files ??= new HostFiles(host)).BackingRule });
            }
        }
        catch (KvmStorageException)
        {
        }

        foreach (ImageInfo backing in info?.BackingChain ?? [])
        {
            yield return host.Paths.ToHostPath(backing.Path) ?? backing.Path;
        }
    }

    private StorageVolume? ResolveImage(DiskAttachRequest request)
    {
        if (request.Pool is not null && request.VolumeName is not null)
        {
            return host.GetVolume(request.Pool, request.VolumeName);
        }

        return request.LocalImagePath is null ? null : host.GetVolumeByPath(request.LocalImagePath);
    }

    private void CheckOtherUsers(string vmName, StorageVolume volume, DiskAttachRequest request)
    {
        if (request.Force)
        {
            return;
        }

        bool newIsReadOnly = request.Settings.ReadOnly ?? request.Device is "cdrom";
        foreach (DomainFileEntry entry in host.ListDomains())
        {
            if (entry.Definition is not { } other)
            {
                continue;
            }

            foreach (DomainDisk disk in WithLiveDisks(other).Where(d => SourceHostPath(d) == volume.Path))
            {
                if (other.Name == vmName)
                {
                    throw new KvmStorageException(
                        ErrorKind.AlreadyExists,
                        DomainErrorIds.ImageAlreadyAttached,
                        $"'{volume.Path}' is already attached to VM '{vmName}' as {disk.Target}. Use -Force to attach it a second time.",
                        volume.Path);
                }

                bool bothShareable = disk.Shareable && request.Settings.Shareable == true;
                if (!bothShareable && !(disk.ReadOnly && newIsReadOnly))
                {
                    throw new KvmStorageException(
                        ErrorKind.ResourceBusy,
                        DomainErrorIds.ImageAttachedElsewhere,
                        $"'{volume.Path}' is attached to VM '{other.Name}' as {disk.Target}{(disk.ReadOnly ? " (read-only)" : string.Empty)}; two VMs writing one image corrupt it. Attach it read-only, mark both -Shareable, or use -Force.",
                        volume.Path);
                }
            }
        }
    }

    /// <summary>A domain's persistent disks, then those only its running VM has (hot-plugged with -Live).</summary>
    private IEnumerable<DomainDisk> WithLiveDisks(DomainDefinition domain)
    {
        DomainDefinition? live;
        try
        {
            live = host.GetLiveDomain(domain.Name);
        }
        catch (KvmStorageException)
        {
            live = null;
        }

        IReadOnlyList<DomainDisk> persistent = domain.Disks;
        return live is null ? persistent : persistent.Concat(live.Disks.Where(l => !persistent.Any(p => p.Target == l.Target && SameSource(p, l))));
    }

    private static bool SameSource(DomainDisk a, DomainDisk b) =>
        a.SourcePath == b.SourcePath && a.SourcePool == b.SourcePool && a.SourceVolume == b.SourceVolume;

    /// <summary>A disk just changed, with its scope: offline (no running VM to read) always Persistent.</summary>
    private VMDisk AsNowDefined(string vmName, DomainDisk disk)
    {
        try
        {
            if (host.GetLiveDomain(vmName) is { } live)
            {
                VMDisk? merged = GetDisks(host.GetDomain(vmName), live).FirstOrDefault(d => d.Target == disk.Target && SameSource(d.Disk, disk));
                if (merged is not null)
                {
                    return merged;
                }

                // A transient VM, or a change made to the running VM only: the returned disk is the running one.
                if (live.FindDisk(disk.Target) is { } running && SameSource(running, disk))
                {
                    return ToVMDisk(disk, VMDiskScope.Live);
                }
            }
        }
        catch (KvmStorageException)
        {
            // The VM went away meanwhile: report the disk as the change left it.
        }

        return ToVMDisk(disk, VMDiskScope.Persistent);
    }

    private VMDisk ToVMDisk(DomainDisk disk, VMDiskScope scope)
    {
        string? source = SourceHostPath(disk);
        StorageVolume? volume = source is null ? null : TryRead(host.Paths.Resolve(source));
        return new VMDisk
        {
            VMName = disk.VMName,
            Target = disk.Target,
            Bus = disk.Bus ?? InferBus(disk),
            Device = disk.Device,
            Type = disk.Type,
            Source = source,
            Pool = disk.SourcePool ?? volume?.Pool,
            VolumeName = disk.SourceVolume ?? (volume?.Pool is null ? null : volume.Name),
            Format = disk.Format,
            IsEmpty = disk.IsEmpty,
            Volume = volume,
            HostName = host.Name,
            Scope = scope,
            Disk = disk,
        };
    }

    /// <summary>The host path a disk reads: its file or device, or its pool volume's path.</summary>
    private string? SourceHostPath(DomainDisk disk)
    {
        if (disk.SourcePath is { } path)
        {
            return path;
        }

        if (disk.SourcePool is { } pool && disk.SourceVolume is { } name)
        {
            try
            {
                string? folder = host.GetPool(pool).Path;
                return folder is null ? null : folder.TrimEnd('/') + "/" + name;
            }
            catch (KvmStorageException)
            {
                return null;
            }
        }

        return null;
    }

    private StorageVolume? TryRead(string localPath)
    {
        try
        {
            return File.Exists(localPath) && !IsBlockDevice(localPath) ? host.GetVolumeByPath(localPath) : null;
        }
        catch (KvmStorageException)
        {
            return null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static bool IsBlockDevice(string localPath)
    {
        try
        {
            const uint TypeMask = 0xF000;
            const uint BlockDevice = 0x6000;
            return (FileStatus.Get(localPath).Mode & TypeMask) == BlockDevice;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static string? InferBus(DomainDisk disk) =>
        DiskTargetNames.TryParse(disk.Target, out string prefix, out _) ? prefix switch
        {
            "vd" => "virtio",
            "sd" => "scsi",
            "hd" => "ide",
            "xvd" => "xen",
            "ubd" => "uml",
            "fd" => "fdc",
            _ => null,
        } : null;
}
