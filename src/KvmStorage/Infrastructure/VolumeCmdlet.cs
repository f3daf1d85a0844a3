using System.Management.Automation;
using KvmStorage.Core.Access;

namespace KvmStorage.Infrastructure;

/// <summary>
/// The base of the cmdlets that work on existing volumes one at a time: the one way to name a volume. By object or
/// path (<c>-Volume</c>), by <c>-Pool</c> and <c>-Name</c>, by <c>-Path</c> (wildcards) or <c>-LiteralPath</c>, or
/// piped in (<c>-InputObject</c>, read by <see cref="VolumeInput"/>: an object names itself, a string is a name in
/// <c>-Pool</c>, a string with a '/' is a path). Every form becomes a <see cref="VolumeSpec"/> for the core's one
/// resolver. <see cref="VolumeFirstCmdlet"/> and <see cref="PoolFirstCmdlet"/> differ only in what the first
/// positions mean.
/// </summary>
public abstract class VolumeCmdlet : KvmCmdlet
{
    /// <summary>Volumes given by object or path.</summary>
    protected const string ByVolume = "ByVolume";

    /// <summary>Volumes given by pool and name.</summary>
    protected const string ByName = "ByName";

    /// <summary>Volumes piped in.</summary>
    protected const string ByInput = "ByInput";

    /// <summary>Image files by wildcard path.</summary>
    protected const string ByPath = "ByPath";

    /// <summary>Image files by literal path.</summary>
    protected const string ByLiteralPath = "ByLiteralPath";

    /// <summary>
    /// Objects from the pipeline, each naming one volume: a volume (Get-Volume), a VM disk (its image), a snapshot (its
    /// volume), a file (Get-ChildItem), a record with Pool and Name (or Path) properties (Import-Csv), a volume name
    /// (with -Pool), or a path (a string with a '/'). A pool object, or a record naming a pool but no volume, is
    /// refused: nothing is ever read as "every volume of the pool".
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = ByInput)]
    public PSObject[] InputObject { get; set; } = [];

    /// <summary>Image files (host paths, or local paths under the host root); wildcards allowed.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPath)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    /// <summary>Image files, taken literally.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByLiteralPath)]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = [];

    /// <summary>-Volume, declared where its position is decided.</summary>
    private protected abstract VolumeReference[] VolumeArgument { get; }

    /// <summary>-Pool, declared where its position is decided.</summary>
    private protected abstract PoolReference? PoolArgument { get; }

    /// <summary>-Name, declared where its position is decided.</summary>
    private protected abstract string[] NameArgument { get; }

    /// <summary>
    /// Runs <paramref name="action"/> once per volume the parameters name, in order; each item's failure is a
    /// non-terminating error for that item (a wildcard path matching nothing is the provider's error).
    /// </summary>
    protected void ForEachVolume(Action<VolumeSpec> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        switch (ParameterSetName)
        {
            case ByName:
                foreach (string name in NameArgument)
                {
                    RunForItem(name, () => action(new VolumeSpec.InPool(PoolArgument!.Name, name)));
                }

                break;
            case ByInput:
                foreach (PSObject input in InputObject)
                {
                    RunForItem(input, () => action(SpecOfInput(input, PoolArgument?.Name)));
                }

                break;
            case ByPath:
                foreach (string pattern in Path)
                {
                    RunForItem(pattern, () =>
                    {
                        foreach (VolumeSpec file in ExpandPathPattern(pattern))
                        {
                            RunForItem(file.ToString(), () => action(file));
                        }
                    });
                }

                break;
            case ByLiteralPath:
                foreach (string path in LiteralPath)
                {
                    RunForItem(path, () => action(SpecOfPath(path)));
                }

                break;
            default:
                foreach (VolumeReference volume in VolumeArgument)
                {
                    RunForItem(volume, () => action(SpecOf(volume)));
                }

                break;
        }
    }
}

/// <summary>
/// Volume cmdlets whose first position is the volume (Test-, Optimize-, Set-, Merge-, Export-Volume):
/// <c>Test-Volume /var/lib/libvirt/images/vm.qcow2</c>. Their default parameter set is <c>ByVolume</c>.
/// </summary>
public abstract class VolumeFirstCmdlet : VolumeCmdlet
{
    /// <summary>
    /// The volume: an object from Get-Volume, a VM disk from Get-VMDisk (its image), a file from Get-ChildItem, or the
    /// path of an image file (a host path such as the Path that objects show, or a local path under the host root).
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByVolume)]
    [ValidateNotNull]
    public VolumeReference[] Volume { get; set; } = [];

    /// <summary>The pool of the volumes named by -Name, or of the volume names piped in.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByName)]
    [Parameter(ParameterSetName = ByInput)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference? Pool { get; set; }

    /// <summary>Names of volumes in -Pool.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByName)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string[] Name { get; set; } = [];

    private protected override VolumeReference[] VolumeArgument => Volume;

    private protected override PoolReference? PoolArgument => Pool;

    private protected override string[] NameArgument => Name;
}

/// <summary>
/// Volume cmdlets whose first two positions are pool and name, as on Get-Volume (Remove-, Resize-Volume):
/// <c>Remove-Volume default vm.qcow2</c>. Their default parameter set is <c>ByName</c>; -Volume is named.
/// </summary>
public abstract class PoolFirstCmdlet : VolumeCmdlet
{
    /// <summary>The pool of the volumes named by -Name, or of the volume names piped in.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName)]
    [Parameter(ParameterSetName = ByInput)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference? Pool { get; set; }

    /// <summary>Names of volumes in -Pool.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByName)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// The volumes: objects from Get-Volume, VM disks from Get-VMDisk (their images), files from Get-ChildItem, or
    /// paths of image files (host paths such as the Path that objects show, or local paths under the host root).
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ByVolume)]
    [ValidateNotNull]
    public VolumeReference[] Volume { get; set; } = [];

    private protected override VolumeReference[] VolumeArgument => Volume;

    private protected override PoolReference? PoolArgument => Pool;

    private protected override string[] NameArgument => Name;
}
