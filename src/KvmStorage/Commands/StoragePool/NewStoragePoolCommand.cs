using System.Management.Automation;
using KvmStorage.Core.Pools;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>
/// New-StoragePool: defines a pool, one parameter set per pool type. Dir pools are complete (define, build,
/// autostart); the other types are defined with their source so libvirt can start them.
/// </summary>
[Cmdlet(VerbsCommon.New, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = DirSet)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class NewStoragePoolCommand : KvmCmdlet
{
    private const string DirSet = "Dir";
    private const string FsSet = "Fs";
    private const string NetfsSet = "Netfs";
    private const string LogicalSet = "Logical";
    private const string DiskSet = "Disk";
    private const string IscsiSet = "Iscsi";
    private const string RbdSet = "Rbd";
    private const string GlusterSet = "Gluster";

    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = string.Empty;

    /// <summary>Target folder (dir, fs, netfs) or device folder (logical, disk, iscsi), as an absolute host path.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = DirSet)]
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = FsSet)]
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = NetfsSet)]
    [Parameter(ParameterSetName = LogicalSet)]
    [Parameter(ParameterSetName = DiskSet)]
    [Parameter(ParameterSetName = IscsiSet)]
    [ValidateNotNullOrEmpty]
    [Alias("TargetPath")]
    public string? Path { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = FsSet)]
    public SwitchParameter FileSystem { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = NetfsSet)]
    public SwitchParameter NetworkFileSystem { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = LogicalSet)]
    public SwitchParameter Logical { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = DiskSet)]
    public SwitchParameter Disk { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = IscsiSet)]
    public SwitchParameter Iscsi { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = RbdSet)]
    public SwitchParameter Rbd { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = GlusterSet)]
    public SwitchParameter Gluster { get; set; }

    /// <summary>Server(s): NFS/CIFS/Gluster host, iSCSI portal, Ceph monitors.</summary>
    [Parameter(Mandatory = true, ParameterSetName = NetfsSet)]
    [Parameter(Mandatory = true, ParameterSetName = IscsiSet)]
    [Parameter(Mandatory = true, ParameterSetName = RbdSet)]
    [Parameter(Mandatory = true, ParameterSetName = GlusterSet)]
    [ValidateNotNullOrEmpty]
    public string[] SourceHost { get; set; } = [];

    [Parameter(ParameterSetName = IscsiSet)]
    [Parameter(ParameterSetName = RbdSet)]
    [Parameter(ParameterSetName = GlusterSet)]
    [ValidateRange(1, 65535)]
    public int SourcePort { get; set; }

    /// <summary>Exported folder (netfs) or folder inside the Gluster volume.</summary>
    [Parameter(Mandatory = true, ParameterSetName = NetfsSet)]
    [Parameter(ParameterSetName = GlusterSet)]
    [ValidateNotNullOrEmpty]
    public string? SourcePath { get; set; }

    /// <summary>Block device (fs, disk), physical volumes (logical), or target IQN (iscsi).</summary>
    [Parameter(Mandatory = true, ParameterSetName = FsSet)]
    [Parameter(Mandatory = true, ParameterSetName = DiskSet)]
    [Parameter(Mandatory = true, ParameterSetName = IscsiSet)]
    [Parameter(ParameterSetName = LogicalSet)]
    [ValidateNotNullOrEmpty]
    public string[] SourceDevice { get; set; } = [];

    /// <summary>Volume group (logical), Ceph pool (rbd) or Gluster volume (gluster).</summary>
    [Parameter(Mandatory = true, ParameterSetName = LogicalSet)]
    [Parameter(Mandatory = true, ParameterSetName = RbdSet)]
    [Parameter(Mandatory = true, ParameterSetName = GlusterSet)]
    [ValidateNotNullOrEmpty]
    public string? SourceName { get; set; }

    /// <summary>File system (fs: auto, ext4, xfs, …; netfs: auto, nfs, glusterfs, cifs) or partition table (disk: dos, gpt, …).</summary>
    [Parameter(ParameterSetName = FsSet)]
    [Parameter(ParameterSetName = NetfsSet)]
    [Parameter(ParameterSetName = DiskSet)]
    [ValidateSet("auto", "ext2", "ext3", "ext4", "ufs", "iso9660", "udf", "gfs", "gfs2", "vfat", "hfs+", "xfs", "ocfs2", "vmfs", "nfs", "glusterfs", "cifs", "dos", "dvh", "gpt", "mac", "bsd", "pc98", "sun", "lvm2")]
    public string? SourceFormat { get; set; }

    /// <summary>NFS protocol version (netfs).</summary>
    [Parameter(ParameterSetName = NetfsSet)]
    [ValidateRange(3, 4)]
    public int ProtocolVersion { get; set; }

    /// <summary>CHAP (iscsi) or cephx (rbd) user name; needs -SecretUuid or -SecretUsage.</summary>
    [Parameter(ParameterSetName = IscsiSet)]
    [Parameter(ParameterSetName = RbdSet)]
    [ValidateNotNullOrEmpty]
    public string? AuthUsername { get; set; }

    [Parameter(ParameterSetName = IscsiSet)]
    [Parameter(ParameterSetName = RbdSet)]
    public Guid SecretUuid { get; set; }

    [Parameter(ParameterSetName = IscsiSet)]
    [Parameter(ParameterSetName = RbdSet)]
    [ValidateNotNullOrEmpty]
    public string? SecretUsage { get; set; }

    /// <summary>Octal mode of the target folder (default 0711 when built).</summary>
    [Parameter(ParameterSetName = DirSet)]
    [Parameter(ParameterSetName = FsSet)]
    [Parameter(ParameterSetName = NetfsSet)]
    [ValidatePattern("^0?[0-7]{3,4}$")]
    public string? Mode { get; set; }

    [Parameter(ParameterSetName = DirSet)]
    [Parameter(ParameterSetName = FsSet)]
    [Parameter(ParameterSetName = NetfsSet)]
    [ValidateRange(0, int.MaxValue)]
    public int Owner { get; set; }

    [Parameter(ParameterSetName = DirSet)]
    [Parameter(ParameterSetName = FsSet)]
    [Parameter(ParameterSetName = NetfsSet)]
    [ValidateRange(0, int.MaxValue)]
    public int Group { get; set; }

    /// <summary>Keep this UUID instead of generating one (to re-create a pool libvirt knew).</summary>
    [Parameter]
    public Guid Uuid { get; set; }

    /// <summary>Create the target folder (dir pools).</summary>
    [Parameter(ParameterSetName = DirSet)]
    public SwitchParameter Build { get; set; }

    [Parameter]
    public SwitchParameter Autostart { get; set; }

    /// <summary>
    /// Start the pool once defined (and built), as <c>virsh pool-start</c>: a running libvirtd creates volumes only in
    /// a running pool. Offline there is no daemon to start it; the pool starts when libvirtd does (with -Autostart).
    /// </summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    /// <summary>Emit the new pool.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(Name, () =>
        {
            PoolType type = ParameterSetName switch
            {
                FsSet => PoolType.Fs,
                NetfsSet => PoolType.Netfs,
                LogicalSet => PoolType.Logical,
                DiskSet => PoolType.Disk,
                IscsiSet => PoolType.Iscsi,
                RbdSet => PoolType.Rbd,
                GlusterSet => PoolType.Gluster,
                _ => PoolType.Dir,
            };
            PoolNames.Validate(Name);
            PoolDefinition definition = BuildDefinition(type);
            string where = definition.TargetPath ?? definition.Source.ToString();
            string action = $"Define {type.ToXmlName()} storage pool at {where}" + (Build ? " and create the folder" : string.Empty)
                + (Start ? ", start it" : string.Empty) + (Autostart ? ", autostarted" : string.Empty);
            if (ShouldProcess(Name, action))
            {
                Core.Pools.StoragePool pool = KvmHost.DefinePool(definition, new PoolDefineOptions { Build = Build, Autostart = Autostart, Start = Start });
                if (Start && pool.PoolState != PoolState.Running)
                {
                    string later = Autostart ? "it starts when libvirtd starts (autostart)" : "start it with Start-StoragePool once libvirtd runs, or define it with -Autostart";
                    string note = $"Pool '{pool.Name}' is defined but not started: no libvirt daemon manages {KvmHost.Name}; {later}.";
                    if (Autostart)
                    {
                        WriteVerbose(note);
                    }
                    else
                    {
                        WriteWarning(note);
                    }
                }

                if (PassThru)
                {
                    WriteObject(pool);
                }
            }
        });
    }

    private PoolDefinition BuildDefinition(PoolType type)
    {
        bool Bound(string name) => MyInvocation.BoundParameters.ContainsKey(name);
        UnixFileMode? mode = Mode is not null && Permissions.TryParseMode(Mode, out UnixFileMode parsed) ? parsed : null;
        int? owner = Bound(nameof(Owner)) ? Owner : null;
        int? group = Bound(nameof(Group)) ? Group : null;
        var spec = new PoolSpec
        {
            Type = type,
            Name = Name,
            Uuid = Bound(nameof(Uuid)) ? Uuid : null,
            TargetPath = Path,
            SourceHosts = SourceHost,
            SourcePort = Bound(nameof(SourcePort)) ? SourcePort : null,
            SourceDirectory = SourcePath,
            SourceDevices = SourceDevice,
            SourceName = SourceName,
            SourceFormat = SourceFormat,
            ProtocolVersion = Bound(nameof(ProtocolVersion)) ? ProtocolVersion : null,
            AuthUsername = AuthUsername,
            SecretUuid = Bound(nameof(SecretUuid)) ? SecretUuid : null,
            SecretUsage = SecretUsage,
            Permissions = mode is null && owner is null && group is null ? Permissions.None : new Permissions(mode, owner, group, null),
        };
        return spec.ToDefinition();
    }
}
